"""Speed and fidelity of ADPM's samplers, side by side, in one run (issue 4, ADPM_SPEC 3.8).

    OMP_NUM_THREADS=1 python benchmarks/speed.py --config configs/digits_lt.yaml --shards data/digits_lt \
        --workdir runs/speed [--checkpoint runs/x/checkpoints/best.pt | --untrained] [key=value ...]

1. Trains a model once with ``adpm_dist.runtime.engine.train`` (or loads ``--checkpoint``; ``--untrained``
   times randomly initialised weights and skips the macro-F1 part: timings do not depend on weights).
2. Per-image predict time on one batch of the evaluation part: the prior network alone, ADPM
   truncated-250 with cached image features, the DiffMIC-style uncached chain (image encoder at
   every step, same weights), respaced-S and DDIM-S. Methods are timed interleaved over several
   rounds and the best round is kept (the machine is shared: the minimum is the least disturbed).
3. Train-step time (forward + backward + Adam step, batch ``train.batch_size``): the joint ADPM
   step vs the prior-only (warm-up) step of the same model.
4. Macro-F1 on the whole evaluation part for each sampler (stochastic ones over several seeds).
Prints a table with the command and appends a dated section to benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adpm_dist.runtime.checkpoint import load_checkpoint  # noqa: E402
from adpm_dist.config import ConfigError, from_dict, load_config  # noqa: E402
from adpm_dist.data.manifest import load_manifest  # noqa: E402
from adpm_dist.data.stream import eval_batches, train_batches  # noqa: E402
from adpm_dist.data.transforms import build_transform  # noqa: E402
from adpm_dist.evaluate import classification_metrics  # noqa: E402
from adpm_dist.models import build_model  # noqa: E402
from adpm_dist.runtime.optim import build_optimizer  # noqa: E402


def timed_rounds(methods: dict, rounds: int) -> dict[str, float]:
    """Best wall time of each method; methods are interleaved so that load changes hit all alike.

    methods: name -> (fn, max_rounds). Returns name -> min seconds.
    """
    times: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(rounds):
        for name, (fn, max_rounds) in methods.items():
            if r < max_rounds:
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: min(v) for name, v in times.items()}


def trained_checkpoint(cfg, args) -> Path:
    if args.checkpoint:
        return Path(args.checkpoint)
    from adpm_dist.runtime.engine import train

    cfg.run.output_dir = str(Path(args.workdir) / "run")
    started = time.perf_counter()
    train(cfg)
    print(f"trained in {time.perf_counter() - started:.0f} s -> {cfg.run.output_dir}", flush=True)
    path = Path(cfg.run.output_dir) / "checkpoints" / "best.pt"
    if not path.is_file():
        raise SystemExit(f"training wrote no {path}; pass --checkpoint")
    return path


def load_model(path: str | Path, shards: str, class_count: int):
    """(config, eval-mode model, epoch) from a best.pt written by the engine."""
    ckpt = load_checkpoint(path)
    cfg = from_dict(ckpt["config"])
    cfg.data.shards = shards
    model = build_model(cfg, [1] * class_count)   # the levels buffer comes from the checkpoint
    model.load_state_dict(ckpt["model"])
    return cfg, model.eval(), ckpt.get("epoch", "?")


def predict_times(model, images, steps: int, fast: int, rounds: int, uncached_rounds: int) -> dict[str, float]:
    """ms per image of each way to predict one batch."""
    def run(**kw):
        return lambda: model.sample(images, generator=torch.Generator().manual_seed(0), **kw)

    methods = {
        "prior only": (lambda: model.prior_probs(images), rounds),
        f"ADPM truncated-{steps}, cached": (run(sampler="truncated", steps=steps), rounds),
        f"DiffMIC-style truncated-{steps}, uncached": (run(sampler="truncated", steps=steps, cache_features=False),
                                                        uncached_rounds),
        f"ADPM respaced-{fast}": (run(sampler="respaced", steps=fast), rounds),
        f"ADPM DDIM-{fast}": (run(sampler="ddim", steps=fast), rounds),
    }
    if uncached_rounds < 1:  # --uncached-rounds 0: skip the slowest row
        methods.pop(f"DiffMIC-style truncated-{steps}, uncached")
    with torch.no_grad():
        model.sample(images, sampler="ddim", steps=2)  # warm-up: allocator, first-call overheads
        # the parts the sampler times are made of: P + E + steps * M (+ the sampler's own arithmetic)
        out = model.prior(images)
        feats, mu = model.encode(images, out), model.prior_probs(images)
        t = torch.full((len(images),), cfg_steps(model) // 2)
        methods |= {
            "  part: image encoder once (E)": (lambda: model.encode(images, out), rounds),
            "  part: one denoiser step (M)": (lambda: model.denoiser(feats, mu, mu, t), rounds),
        }
        return {k: v / len(images) * 1e3 for k, v in timed_rounds(methods, rounds).items()}


def cfg_steps(model) -> int:
    return len(model.scheduler)


def train_step_times(cfg, manifest, class_count: int, steps: int) -> tuple[dict[str, float], int]:
    """ms of one optimizer step: joint ADPM step vs prior-only step, same (fresh) model and batch."""
    model = build_model(cfg, [1] * class_count).train()
    optimizer = build_optimizer(model, cfg.train)
    parts = [p for p in manifest.parts if p != cfg.data.eval_part]
    tf = build_transform(cfg.data.image_size, train=True, hflip=False, rotation=0.0)
    batch = next(iter(train_batches(manifest, parts, cfg.train.batch_size, tf, epoch=0, seed=0)))
    x, y = batch["image"], batch["label"]
    gen = torch.Generator().manual_seed(0)
    t = torch.randint(0, cfg.diffusion.timesteps, (len(y),), generator=gen)
    eps = torch.randn(len(y), class_count, generator=gen)

    def step(joint: bool):
        model(x, y, t, eps, joint=joint)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(True), step(False)
    best = timed_rounds({"ADPM joint step": (lambda: step(True), steps),
                         "prior-only step": (lambda: step(False), steps)}, steps)
    return {k: v * 1e3 for k, v in best.items()}, len(y)


def sampler_f1(model, batches, names, sampler: str, steps: int, seed: int, start: int = 0) -> float:
    labels, preds = [], []
    with torch.no_grad():
        for i, batch in enumerate(batches):
            if sampler == "prior":
                out = model.prior_probs(batch["image"])
            else:
                gen = torch.Generator().manual_seed(seed * 100_003 + i)
                out, _ = model.sample(batch["image"], sampler=sampler, steps=steps, generator=gen,
                                      respace_start=start)
            labels += batch["label"].tolist()
            preds += out.argmax(1).tolist()
    return classification_metrics(np.array(labels), np.array(preds), names)["macro_f1"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/digits_lt.yaml")
    parser.add_argument("--shards", required=True, help="digits-LT shards (python -m adpm_dist.data.prepare)")
    parser.add_argument("--workdir", default="runs/speed")
    parser.add_argument("--checkpoint", default="", help="skip training, use this best.pt")
    parser.add_argument("--untrained", action="store_true", help="time random weights of --config; no macro-F1")
    parser.add_argument("--image-size", type=int, default=0, help="with --untrained: resize inputs (paper: 224)")
    parser.add_argument("--batch", type=int, default=256, help="images per predict call")
    parser.add_argument("--fast-steps", type=int, default=10, help="S of respaced-S and DDIM-S (timed)")
    parser.add_argument("--f1-steps", default="10,50", help="S values of respaced-S and DDIM-S in the macro-F1 table")
    parser.add_argument("--respace-start", type=int, default=250,
                        help="also score respaced/DDIM over positions 0..N-1 (diffusion.respace_start=N); 0: skip")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (best kept)")
    parser.add_argument("--uncached-rounds", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3, help="sampling seeds for the macro-F1 of stochastic samplers")
    parser.add_argument("--threads", type=int, default=1, help="torch threads while timing")
    parser.add_argument("--results", default=str(ROOT / "benchmarks/RESULTS.md"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    command = "python benchmarks/speed.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    extra = [f"data.image_size={args.image_size}"] if args.image_size else []
    try:
        cfg = load_config(args.config, [f"data.shards={args.shards}", *extra, *args.overrides])
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2

    manifest = load_manifest(args.shards)
    names = manifest.class_names
    if args.untrained:
        torch.manual_seed(0)
        model, epoch = build_model(cfg, [1] * len(names)).eval(), "untrained"
    else:
        cfg, model, epoch = load_model(trained_checkpoint(cfg, args), args.shards, len(names))
    torch.set_num_threads(args.threads)
    eval_tf = build_transform(cfg.data.image_size, train=False)
    images = next(iter(eval_batches(manifest, [cfg.data.eval_part], args.batch, eval_tf)))["image"]
    steps, fast = cfg.diffusion.test_timesteps, args.fast_steps

    predict = predict_times(model, images, steps, fast, args.rounds, args.uncached_rounds)
    print(predict, flush=True)
    train_ms, train_batch = train_step_times(cfg, manifest, len(names), args.train_steps)
    print(train_ms, flush=True)

    f1 = {}
    if not args.untrained:
        full = eval_batches(manifest, [cfg.data.eval_part], cfg.train.eval_batch_size, eval_tf)
        runs = [("prior only", "prior", 0, 1, 0), (f"truncated-{steps}", "truncated", steps, args.seeds, 0)]
        starts = [0] + ([args.respace_start] if args.respace_start else [])
        for s in [int(v) for v in args.f1_steps.split(",") if v]:
            for n in starts:
                suffix = f" from {n}" if n else ""
                runs += [(f"respaced-{s}{suffix}", "respaced", s, args.seeds, n),
                         (f"DDIM-{s}{suffix}", "ddim", s, args.seeds, n)]
        for label, sampler, s, seeds, n in runs:
            values = [sampler_f1(model, full, names, sampler, s, seed, n) for seed in range(seeds)]
            f1[label] = (statistics.mean(values), statistics.pstdev(values))
            print(label, f1[label], flush=True)

    text = report(cfg, args, command, epoch, len(images), predict, train_ms, train_batch, f1, manifest)
    print(text)
    results = Path(args.results)
    previous = results.read_text() if results.is_file() else "# Benchmark results\n"
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    results.write_text(previous.rstrip("\n") + f"\n\n## Sampler speed and fidelity ({stamp}, benchmarks/speed.py)\n\n"
                       + text + "\n")
    print(f"appended to {results}")
    return 0


def report(cfg, args, command, epoch, n, predict, train_ms, train_batch, f1, manifest) -> str:
    steps, fast, m = cfg.diffusion.test_timesteps, args.fast_steps, cfg.model
    prior_ms = predict["prior only"]
    cached = predict[f"ADPM truncated-{steps}, cached"]
    uncached = predict.get(f"DiffMIC-style truncated-{steps}, uncached", float("nan"))
    fast_best = min(predict[f"ADPM respaced-{fast}"], predict[f"ADPM DDIM-{fast}"])
    train_ratio = train_ms["ADPM joint step"] / train_ms["prior-only step"]
    rows = [
        (f"ADPM <= {fast} steps / prior-only predict", f"{fast_best / prior_ms:.2f}x", "<= 1.3x",
         fast_best / prior_ms <= 1.3),
        (f"uncached-{steps} / cached-{steps}", f"{uncached / cached:.1f}x", ">= 50x", uncached / cached >= 50),
        (f"(for reference) uncached-{steps} / cached DDIM-{fast}", f"{uncached / fast_best:.0f}x", "", None),
        ("ADPM train step / prior-only step", f"{train_ratio:.2f}x", "<= 1.6x", train_ratio <= 1.6),
    ]
    fast_f1 = {k: v[0] for k, v in f1.items() if k.split(" ")[0] in (f"respaced-{fast}", f"DDIM-{fast}")}
    if fast_f1:
        best = max(fast_f1, key=fast_f1.get)
        lost = 100 * (f1[f"truncated-{steps}"][0] - fast_f1[best])
        rows.insert(2, (f"macro-F1 lost, best {fast}-step ({best}) vs truncated-{steps}", f"{lost:.2f} pt",
                        "<= 0.5 pt", lost <= 0.5))
    lines = [
        f"Command: `OMP_NUM_THREADS=1 {command}`",
        "",
        f"Model: prior {m.backbone} (level {m.backbone_level}) + local {m.local_backbone or m.backbone} on "
        f"{m.num_crops} crops of {m.crop_size} px; denoiser encoder {m.encoder}; hidden {m.hidden_dim}, tokens "
        f"{m.token_dim}; image {cfg.data.image_size} px; weights: {epoch if epoch == 'untrained' else f'epoch {epoch}'}."
        f" torch threads {args.threads}; load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
        "cores (shared machine: each timing is the best of interleaved rounds).",
        "",
        f"| predict (batch {n}) | ms / image | x prior |",
        "|---|---|---|",
        *[f"| {k} | {v:.3f} | {v / prior_ms:.2f} |" for k, v in predict.items()],
        "",
        f"| train step (batch {train_batch}) | ms | x prior-only |",
        "|---|---|---|",
        *[f"| {k} | {v:.1f} | {v / train_ms['prior-only step']:.2f} |" for k, v in train_ms.items()],
    ]
    if f1:
        lines += ["", f"| macro-F1 on `{cfg.data.eval_part}` ({manifest.num_samples[cfg.data.eval_part]} images) "
                  f"| mean | std over {args.seeds} seeds |", "|---|---|---|",
                  *[f"| {k} | {mean:.4f} | {std:.4f} |" for k, (mean, std) in f1.items()]]
    lines += ["", "| target | measured | goal | met |", "|---|---|---|---|",
              *[f"| {a} | {b} | {c} | {'' if ok is None else ('yes' if ok else 'NO')} |" for a, b, c, ok in rows]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
