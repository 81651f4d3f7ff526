"""The training loop, readable top to bottom: prior warm-up, joint ADPM training, selection, evaluation.

``train(cfg)`` is the one loop every entry point runs (launch/train.py, Ray Tune trials, tests).
It never touches the evaluation part until the end, and selects the checkpoint on a validation
carve-out of the training parts (DiffMIC selected on the test set: ADPM_SPEC 2.6).
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import load_best, save_best
from .config import Config, save_config, to_dict
from .data.manifest import Manifest, load_manifest
from .data.stream import eval_batches, train_batches
from .data.transforms import build_transform
from .data.validation import carve_validation
from .diffusion import antithetic_timesteps
from .distributed import build_accelerator
from .evaluate import classification_metrics, format_table
from .models import ADPM, build_model
from .optim import build_optimizer, set_lr


@dataclass
class DataPlan:
    """Which parts and keys each phase reads; computed from the manifest alone (no images read)."""
    train_parts: list[str]
    eval_part: str
    val_keys: frozenset[str]
    class_counts: list[int]  # per class, training samples actually trained on (eq. 14 uses these)


def plan_data(manifest: Manifest, cfg: Config) -> DataPlan:
    data = cfg.data
    parts = list(manifest.parts)
    if data.eval_part not in parts:
        raise ValueError(f"data.eval_part: {data.eval_part!r} is not a part of {manifest.root} (parts: {parts})")
    train_parts = data.train_parts or [p for p in parts if p not in (data.eval_part, "test")]
    for p in train_parts:
        if p not in parts:
            raise ValueError(f"data.train_parts: {p!r} is not a part of {manifest.root} (parts: {parts})")
        if p == data.eval_part:
            raise ValueError(f"data.train_parts includes the evaluation part {p!r}")
    if not train_parts:
        raise ValueError(f"no training parts left in {manifest.root} once {data.eval_part!r} is held out")
    rows = manifest.rows(train_parts)
    val_keys = carve_validation(((r.key, r.label, r.group) for r in rows), data.val_fraction, cfg.run.seed)
    counts = [0] * len(manifest.class_names)
    for r in rows:
        if r.key not in val_keys:
            counts[r.label] += 1
    return DataPlan(train_parts, data.eval_part, val_keys, counts)


@torch.no_grad()
def predict(model: ADPM, batches, cfg: Config, accelerator, seed: int, desc: str = "sampling") -> dict:
    """Sample every image once; gather from all ranks and de-duplicate by key (DESIGN.md 5)."""
    from accelerate.utils import gather_object

    model.eval()
    records = []
    bar = tqdm(batches, desc=desc, leave=False, disable=not accelerator.is_local_main_process)
    for i, batch in enumerate(bar):
        images = batch["image"].to(accelerator.device)
        gen = torch.Generator().manual_seed(seed * 100_003 + accelerator.process_index * 1009 + i)
        with accelerator.autocast():
            y0, mu = model.sample(images, sampler=cfg.diffusion.sampler, steps=cfg.diffusion.test_timesteps,
                                  test_rule=cfg.noise.test_rule, generator=gen)
        for key, label, y, m in zip(batch["key"], batch["label"].tolist(), y0.float().cpu(), mu.float().cpu()):
            records.append((key, label, y.numpy(), m.numpy()))
    records = gather_object(records) if accelerator.num_processes > 1 else records
    unique = {r[0]: r for r in records}
    keys = sorted(unique)
    return {
        "keys": keys,
        "labels": np.array([unique[k][1] for k in keys], dtype=np.int64),
        "y0": np.stack([unique[k][2] for k in keys]) if keys else np.zeros((0, model.num_classes)),
        "prior": np.stack([unique[k][3] for k in keys]) if keys else np.zeros((0, model.num_classes)),
    }


def score(pred: dict, class_names: list[str]) -> dict:
    """Diffusion (argmax y0, ADPM_SPEC 3.8) and prior-alone metrics of one prediction set."""
    metrics = classification_metrics(pred["labels"], pred["y0"].argmax(1), class_names)
    metrics["prior"] = classification_metrics(pred["labels"], pred["prior"].argmax(1), class_names)
    return metrics


def write_predictions(path: Path, pred: dict, class_names: list[str]) -> None:
    probs = torch.softmax(torch.as_tensor(pred["y0"]), dim=1).numpy()  # DiffMIC read-out (ADPM_SPEC 1.5)
    header = ["key", "label", "prediction", "prior_prediction"] + [f"p_{c}" for c in class_names]
    lines = [",".join(header)]
    for k, label, y0, prior, p in zip(pred["keys"], pred["labels"], pred["y0"], pred["prior"], probs):
        row = [k, class_names[label], class_names[int(y0.argmax())], class_names[int(prior.argmax())]]
        lines.append(",".join(row + [f"{v:.6f}" for v in p]))
    path.write_text("\n".join(lines) + "\n")


def train(cfg: Config, accelerator=None, on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train ADPM as ``cfg`` says and return the evaluation metrics (also written to run.output_dir).

    ``on_epoch(row)`` is called on every rank after each epoch with that epoch's summary row
    (losses, images/s and, on validation epochs, ``val_macro_f1``): Ray Tune reports through it.
    """
    from accelerate.utils import set_seed

    acc = accelerator or build_accelerator(cfg.train.mixed_precision,
                                           find_unused_parameters=cfg.train.prior_warmup_epochs > 0)
    set_seed(cfg.run.seed)
    out = Path(cfg.run.output_dir)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")

    # 1. Data: parts, validation carve-out and class counts from the manifest.
    manifest = load_manifest(cfg.data.shards)
    plan = plan_data(manifest, cfg)
    names = manifest.class_names
    d = cfg.data
    train_tf = build_transform(d.image_size, train=True, hflip=d.hflip, vflip=d.vflip, rotation=d.rotation)
    eval_tf = build_transform(d.image_size, train=False)
    rank, world = acc.process_index, acc.num_processes

    def val_batches():
        return eval_batches(manifest, plan.train_parts, cfg.train.eval_batch_size, eval_tf, rank=rank,
                            world_size=world, include_keys=plan.val_keys, num_workers=d.num_workers)

    # 2. Model, one optimizer over both parts; eq. 14 levels from the training counts.
    model = build_model(cfg, plan.class_counts)
    optimizer = build_optimizer(model, cfg.train)
    model, optimizer = acc.prepare(model, optimizer)  # never prepare the streaming loader (STACK_FACTS 5)
    raw = acc.unwrap_model(model)
    acc.print(f"data: {manifest.root} | train parts {plan.train_parts} ({sum(plan.class_counts)} samples, "
              f"{len(plan.val_keys)} held out for validation) | eval part {plan.eval_part!r}")
    acc.print("noise levels lambda_j: " + ", ".join(f"{n}={v:.3f}" for n, v in zip(names, raw.levels.tolist())))

    # 3. Prior warm-up, then joint training; validate on the carve-out and keep the best.
    warmup, total = cfg.train.prior_warmup_epochs, cfg.train.prior_warmup_epochs + cfg.train.epochs
    gen = torch.Generator().manual_seed(cfg.run.seed * 7919 + rank)  # t and eps, per rank
    best = {"epoch": -1, "macro_f1": -math.inf}
    history = []
    for epoch in range(total):
        joint = epoch >= warmup
        batches = train_batches(manifest, plan.train_parts, cfg.train.batch_size, train_tf, epoch=epoch,
                                seed=cfg.run.seed, rank=rank, world_size=world, num_workers=d.num_workers,
                                exclude_keys=plan.val_keys)
        n_batches = len(batches)
        model.train()
        sums, seen, start = {}, 0, time.perf_counter()
        phase = "joint" if joint else "prior warm-up"
        bar = tqdm(batches, total=n_batches, desc=f"epoch {epoch + 1}/{total} ({phase})", leave=False,
                   disable=not acc.is_local_main_process)
        for i, batch in enumerate(bar):
            lr = set_lr(optimizer, cfg.train, (epoch - warmup) + i / n_batches)
            images, labels = batch["image"].to(acc.device), batch["label"].to(acc.device)
            t = antithetic_timesteps(len(labels), cfg.diffusion.timesteps, gen, acc.device)
            eps = torch.randn(len(labels), len(names), generator=gen).to(acc.device)
            with acc.autocast():
                losses = model(images, labels, t, eps, joint=joint)
            acc.backward(losses["loss"])
            if cfg.train.grad_clip > 0:
                acc.clip_grad_norm_(raw.denoiser.parameters(), cfg.train.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            seen += len(labels)
            bar.set_postfix({k: f"{v / (i + 1):.4f}" for k, v in sums.items()} | {"lr": f"{lr:.2e}"})
        row = {"epoch": epoch + 1, "phase": phase, "images_per_s": seen * world / (time.perf_counter() - start)}
        row.update({k: v / max(n_batches, 1) for k, v in sums.items()})

        last = epoch == total - 1
        if joint and ((epoch - warmup + 1) % cfg.train.val_every == 0 or last):
            val = score(predict(raw, val_batches(), cfg, acc, cfg.run.seed, "validation"), names)
            row.update(val_macro_f1=val["macro_f1"], val_prior_macro_f1=val["prior"]["macro_f1"])
            if val["macro_f1"] > best["macro_f1"]:
                best = {"epoch": epoch + 1, "macro_f1": val["macro_f1"]}
                save_best(acc, model, out / "checkpoints" / "best.pt", cfg, extra=best | {"class_names": names})
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        acc.print(" | ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))

    # 4. Evaluate the selected checkpoint on the evaluation part, once.
    load_best(raw, out / "checkpoints" / "best.pt")
    test_batches = eval_batches(manifest, [plan.eval_part], cfg.train.eval_batch_size, eval_tf, rank=rank,
                                world_size=world, num_workers=d.num_workers)
    pred = predict(raw, test_batches, cfg, acc, cfg.run.seed + 1, f"evaluating {plan.eval_part}")
    expected = manifest.num_samples[plan.eval_part]
    if len(pred["keys"]) != expected:
        raise RuntimeError(f"evaluation saw {len(pred['keys'])} unique samples of part {plan.eval_part!r}, "
                           f"manifest says {expected}")
    metrics = score(pred, names)
    metrics.update(
        eval_part=plan.eval_part, best_epoch=best["epoch"], val_macro_f1=best["macro_f1"],
        sampler=cfg.diffusion.sampler, sampling_steps=cfg.diffusion.test_timesteps,
        noise_levels=dict(zip(names, raw.levels.tolist())), train_counts=dict(zip(names, plan.class_counts)),
        history=history,
    )
    if acc.is_main_process:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        write_predictions(out / "predictions.csv", pred, names)
        acc.print(format_table(metrics))
        acc.print(f"wrote {out / 'metrics.json'}, {out / 'predictions.csv'}, {out / 'config.yaml'}")
    acc.wait_for_everyone()
    return metrics


__all__ = ["train", "plan_data", "predict", "score", "DataPlan", "to_dict"]
