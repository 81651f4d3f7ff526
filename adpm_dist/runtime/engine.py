"""The training loop, readable top to bottom: prior warm-up, joint ADPM training, selection, evaluation.

``train(cfg)`` is the one loop every entry point runs (launch/train.py, Ray Tune trials, tests), on
one process, DDP or DeepSpeed ZeRO-2/3 (docs/distributed.md). It never touches the evaluation part
until the end, and selects the checkpoint on validation data: a held-out `val` part or a carve-out of
the training parts (plan.py; DiffMIC selected on the test set: ADPM_SPEC 2.6). Validation and the final test run on ``eval_model``, a
plain copy of the model on every rank, loaded with full (gathered) weights: no ZeRO collective
inside sampling, and exactly the weights that go into best.pt.
"""
from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..methods import training_epochs
from .checkpoint import enter_epoch, load_best, resume, rng_snapshot, save_best, save_training_state
from ..config import Config, save_config, to_dict
from ..data.manifest import load_manifest
from ..data.stream import eval_batches, train_batches
from ..data.transforms import build_transform
from ..diffusion.scheduler import antithetic_timesteps
from .distributed import (build_accelerator, check_launch, configure_for, full_state_dict, has_idle_parameters,
                          make_zero3_safe,
                          mean_over_ranks, ranks_agree, sync_buffers, world_info, zero_stage)
from .ema import EMA
from ..evaluate import classification_metrics, format_table
from ..models import ADPM, build_model
from .optim import build_optimizer, clipped_parameters, restart_group, set_lr
from ..data.plan import DataPlan, plan_data
from .tracking import RunLog, peak_memory_mb, progress


@torch.no_grad()
def predict(model: ADPM, batches, cfg: Config, accelerator, seed: int, desc: str = "sampling") -> dict:
    """Sample every image once; gather from all ranks and de-duplicate by key (DESIGN.md 5)."""
    from accelerate.utils import gather_object

    model.eval()
    records = []
    levels = None  # noise.test_levels=soft_counts: pass 1 (prior only) re-estimates lambda_j (ADPM_SPEC 3.6)
    if cfg.noise.test_levels == "soft_counts":
        levels = model.soft_count_levels(batches, accelerator.device, lambda n: accelerator.reduce(n, "sum"))
    bar = progress(batches, acc=accelerator, desc=desc, leave=False)
    for i, batch in enumerate(bar):
        images = batch["image"].to(accelerator.device)
        gen = torch.Generator().manual_seed(seed * 100_003 + accelerator.process_index * 1009 + i)
        with accelerator.autocast():
            y0, mu = model.sample(images, sampler=cfg.diffusion.sampler, steps=cfg.diffusion.test_timesteps,
                                  test_rule=cfg.noise.test_rule, generator=gen, levels=levels,
                                  samples=cfg.diffusion.samples, respace_start=cfg.diffusion.respace_start)
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
    header += [f"prior_p_{c}" for c in class_names]  # the prior's softmax: its AUC/calibration in report.md
    lines = [",".join(header)]
    for k, label, y0, prior, p in zip(pred["keys"], pred["labels"], pred["y0"], pred["prior"], probs):
        row = [k, class_names[label], class_names[int(y0.argmax())], class_names[int(prior.argmax())]]
        lines.append(",".join(row + [f"{v:.6f}" for v in p] + [f"{v:.6f}" for v in prior]))
    path.write_text("\n".join(lines) + "\n")


def train(cfg: Config, accelerator=None, on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train ADPM as ``cfg`` says and return the evaluation metrics (also written to run.output_dir).

    ``on_epoch(row)`` is called on every rank after each epoch with that epoch's summary row (losses
    averaged over ranks, lr, step, images/s, step time, peak memory and, on validation epochs,
    ``val_macro_f1``): Ray Tune reports through it. With train.resume=auto a killed run continues
    from its last checkpoint and ends with the same metrics as an uninterrupted one.
    """
    from accelerate.utils import set_seed

    t = cfg.train
    acc = accelerator or build_accelerator(t.mixed_precision, find_unused_parameters=has_idle_parameters(t))
    configure_for(acc, t)  # our accumulation / clipping / micro-batch, also into a caller's Accelerator
    check_launch(acc)
    set_seed(cfg.run.seed)
    out = Path(cfg.run.output_dir)
    ckpt_dir = out / "checkpoints"
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    acc.print(f"config: {cfg.run.output_dir}/config.yaml | {world_info(acc)}")

    # 1. Data: parts, validation data and class counts from the manifest.
    manifest = load_manifest(cfg.data.shards)
    plan = plan_data(manifest, cfg)
    names = manifest.class_names
    d = cfg.data
    train_tf = build_transform(d.image_size, train=True, hflip=d.hflip, vflip=d.vflip, rotation=d.rotation)
    eval_tf = build_transform(d.image_size, train=False)
    rank, world = acc.process_index, acc.num_processes

    def val_batches():
        val_parts, val_keys = plan.val_source()
        return eval_batches(manifest, val_parts, t.eval_batch_size, eval_tf, rank=rank,
                            world_size=world, include_keys=val_keys, num_workers=d.num_workers)

    # 2. Model, one optimizer over both parts (ZeRO-3-safe); eq. 14 levels from the training counts.
    model = build_model(cfg, plan.class_counts)
    eval_model = copy.deepcopy(model).to(acc.device).eval()
    optimizer = build_optimizer(model, t)
    probe = [torch.zeros(2, 3, d.image_size, d.image_size), torch.zeros(2, dtype=torch.long),
             torch.zeros(2, dtype=torch.long), torch.zeros(2, len(names))]
    if kept := make_zero3_safe(acc, model, lambda: model(*probe, joint=True)):
        acc.print(f"ZeRO-3: kept gathered through forward/backward (modules with non-tensor outputs): {kept}")
    model, optimizer = acc.prepare(model, optimizer)  # never prepare the streaming loader (STACK_FACTS 5)
    raw = acc.unwrap_model(model)
    ema = EMA(acc, raw, t.ema_decay) if t.ema_decay > 0 else None
    gen = torch.Generator().manual_seed(cfg.run.seed * 7919 + rank)  # t and eps, per rank
    acc.print(f"data: {manifest.root} | train parts {plan.train_parts} ({sum(plan.class_counts)} samples) | "
              f"{plan.describe_val()} | eval part {plan.eval_part!r}")
    levels = getattr(eval_model, "levels", None)  # ADPM's eq. 14 lambda_j; a baseline has none (method=)
    noise_levels = dict(zip(names, levels.tolist())) if levels is not None else {}
    acc.print(f"method {cfg.method} | noise levels lambda_j: "
              + (", ".join(f"{n}={v:.3f}" for n, v in noise_levels.items()) or "none"))
    clipped = clipped_parameters(raw)  # the denoiser (a baseline's classifier); never the prior

    # 3. Where to start: a fresh run, or the position of a checkpoint (train.resume).
    loop, resumed = resume(acc, cfg, ckpt_dir, gen, ema)
    log = RunLog(acc, out, log_every=t.log_every, images_per_step=t.batch_size * world * t.grad_accum,
                 purge_step=loop["step"] if resumed else None)
    # ADPM: prior warm-up epochs, then joint ones; baselines: no warm-up, every epoch trains and validates.
    warmup, total = training_epochs(cfg)

    def checkpoint(epoch: int, batch: int, sums: dict, epoch_rng: dict, val_f1: float | None = None) -> None:
        loop.update(epoch=epoch, batch=batch)
        rank_state = {"gen": gen.get_state(), "rng": rng_snapshot(), "epoch_rng": epoch_rng, "sums": sums}
        meta = {**loop, "val_macro_f1": val_f1, "world_size": world, "zero_stage": zero_stage(acc),
                "config": to_dict(cfg)}
        path = save_training_state(acc, ckpt_dir, meta, rank_state, ema and ema.state_dict(), t.keep_checkpoints)
        acc.print(f"checkpoint: {path} (epoch {epoch + 1}, batch {batch}, step {loop['step']})")

    # 4. Prior warm-up, then joint training; validate (plan.val_source) and keep the best.
    for epoch in range(loop["epoch"], total):
        joint = epoch >= warmup
        phase = ("joint" if joint else "prior warm-up") if cfg.method == "adpm" else cfg.method
        batches = train_batches(manifest, plan.train_parts, t.batch_size, train_tf, epoch=epoch, seed=cfg.run.seed,
                                rank=rank, world_size=world, num_workers=d.num_workers, exclude_keys=plan.val_keys,
                                class_balanced=cfg.method == "resample")
        usable = len(batches) - len(batches) % t.grad_accum  # whole optimizer steps only
        if usable == 0:
            raise ValueError(f"train.grad_accum={t.grad_accum} exceeds the {len(batches)} batches per epoch")
        batch_iter, first, epoch_rng, sums = enter_epoch(batches, resumed)  # data position of a resumed run
        resumed = None
        if joint and epoch == warmup and first == 0:  # the denoiser's Adam starts with joint training
            restart_group(optimizer, "denoiser")
        if hasattr(raw, "set_epoch"):  # baselines: LDAM-DRW's re-weighting starts at an epoch
            raw.set_epoch(epoch)
        model.train()
        seen, steps_here, start = 0, 0, time.perf_counter()
        bar = progress(total=usable, initial=first, desc=f"epoch {epoch + 1}/{total} ({phase})", leave=False, acc=acc)
        for i in range(first, usable):
            batch = next(batch_iter)
            lr = set_lr(optimizer, t, (epoch - warmup) + i / usable)
            images, labels = batch["image"].to(acc.device), batch["label"].to(acc.device)
            steps_t = antithetic_timesteps(len(labels), cfg.diffusion.train_t_max or cfg.diffusion.timesteps, gen,
                                           acc.device)
            eps = torch.randn(len(labels), len(names), generator=gen).to(acc.device)
            sync_buffers(acc, raw)  # DeepSpeed only: rank 0's BatchNorm statistics, as DDP does
            with acc.accumulate(model):
                with acc.autocast():
                    losses = model(images, labels, steps_t, eps, joint=joint)
                acc.backward(losses["loss"])
                if acc.sync_gradients and t.grad_clip > 0 and clipped:  # under DeepSpeed its config clips (all)
                    acc.clip_grad_norm_(clipped, t.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            seen += len(labels)
            bar.update()
            bar.set_postfix({k: f"{v / (i + 1):.4f}" for k, v in sums.items()} | {"lr": f"{lr:.2e}"})
            if acc.sync_gradients:
                loop["step"] += 1
                steps_here += 1
                if ema is not None:
                    ema.update(raw)
                log.step(loop["step"], {k: v.item() for k, v in losses.items()},
                         {g.get("name", str(j)): g["lr"] for j, g in enumerate(optimizer.param_groups)},
                         f"epoch {epoch + 1} batch {i + 1}/{usable}")
                every = t.checkpoint_every_steps
                if every and loop["step"] % every == 0 and i + 1 < usable:
                    checkpoint(epoch, i + 1, sums, epoch_rng)
        bar.close()
        elapsed = time.perf_counter() - start
        row = {"epoch": epoch + 1, "phase": phase, "images_per_s": seen * world / elapsed}
        row.update(mean_over_ranks(acc, {k: v / usable for k, v in sums.items()}))
        row.update(lr=lr, step=loop["step"], step_time_s=elapsed / max(steps_here, 1),
                   max_mem_mb=peak_memory_mb(acc.device))

        val_f1, last = None, epoch == total - 1
        if joint and ((epoch - warmup + 1) % t.val_every == 0 or last):
            weights = full_state_dict(acc, raw)  # every rank: collective under ZeRO-3
            if world > 1:
                acc.print(f"parameters identical on all {world} ranks (sha256 {ranks_agree(acc, raw, weights)})")
            weights = ema.weights(weights) if t.eval_ema else weights
            eval_model.load_state_dict(weights)
            val = score(predict(eval_model, val_batches(), cfg, acc, cfg.run.seed, "validation"), names)
            val_f1 = val["macro_f1"]
            row.update(val_macro_f1=val_f1, val_prior_macro_f1=val["prior"]["macro_f1"])
            if loop["best"]["macro_f1"] is None or val_f1 > loop["best"]["macro_f1"]:
                loop["best"] = {"epoch": epoch + 1, "macro_f1": val_f1}
                save_best(acc, weights, ckpt_dir / "best.pt", cfg,
                          extra=loop["best"] | {"class_names": names, "ema": t.eval_ema})
        loop["history"].append(row)
        if t.checkpoint_every_epochs and ((epoch + 1) % t.checkpoint_every_epochs == 0 or last):
            checkpoint(epoch + 1, 0, {}, rng_snapshot(), val_f1)
        log.epoch(row, loop["history"])
        if on_epoch is not None:
            on_epoch(row)
    log.close()

    # 5. Evaluate the selected checkpoint on the evaluation part, once.
    best = load_best(eval_model, ckpt_dir / "best.pt")
    acc.print(f"loaded {ckpt_dir / 'best.pt'}: epoch {best['epoch']}, validation macro-F1 {best['macro_f1']:.4f}, "
              f"{'EMA' if best.get('ema') else 'live'} weights")
    test_batches = eval_batches(manifest, [plan.eval_part], t.eval_batch_size, eval_tf, rank=rank,
                                world_size=world, num_workers=d.num_workers)
    pred = predict(eval_model, test_batches, cfg, acc, cfg.run.seed + 1, f"evaluating {plan.eval_part}")
    expected = manifest.num_samples[plan.eval_part]
    if len(pred["keys"]) != expected:
        raise RuntimeError(f"evaluation saw {len(pred['keys'])} unique samples of part {plan.eval_part!r}, "
                           f"manifest says {expected}")
    metrics = score(pred, names)
    metrics.update(
        eval_part=plan.eval_part, best_epoch=best["epoch"], val_macro_f1=best["macro_f1"],
        sampler=cfg.diffusion.sampler, sampling_steps=cfg.diffusion.test_timesteps,
        method=cfg.method, noise_levels=noise_levels, train_counts=dict(zip(names, plan.class_counts)),
        history=loop["history"],
    )
    if acc.is_main_process:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        write_predictions(out / "predictions.csv", pred, names)
        acc.print(format_table(metrics))
        acc.print(f"wrote {out / 'metrics.json'}, {out / 'predictions.csv'}, {out / 'config.yaml'}")
        try:  # after metrics.json: a plotting failure must never cost a finished run its results
            from ..report import write_report
            acc.print(f"wrote {write_report(out)}")
        except Exception as e:  # noqa: BLE001
            acc.print(f"warning: report.md not written ({type(e).__name__}: {e}); "
                      f"retry with `python -m adpm_dist.report show {out}`")
    acc.wait_for_everyone()
    return metrics


__all__ = ["train", "plan_data", "predict", "score", "DataPlan", "to_dict"]
