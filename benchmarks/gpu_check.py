"""The prepared GPU check (issue 26): one command, at most ~8 minutes on one H100/H200.

    python -m benchmarks.gpu_check [--out runs/gpu_check] [--budget-s 420] [--workers N]
    python -m benchmarks.gpu_check --tiny          # the same, end to end on CPU in seconds (the test)

Everything runs on the first accelerator (cuda:0), or the CPU without one, in bf16 autocast:
1. train step images/s at the paper's size (configs/pad_ufes.yaml: 224 px, ResNet-50 DCG, batch 32,
   random weights and images, the engine's Adam) for the prior alone (warm-up step), ADPM exact
   (the paper's joint step) and ADPM with the `--quick` levers (benchmarks/speed.py QUICK_DEFAULTS),
   each with channels_last off/on and torch.compile off/on; peak device memory of each;
2. the predict ratio: the recommended sampler (respaced-5) over the prior alone, per image;
3. Adam: the engine's optimizer step vs the same with fused=True;
4. the loader: images/s (wall and per CPU-second) of one training epoch over synthetic 600x450
   JPEGs stored at 341x256 (benchmarks/data_throughput.py's photos) for every data.cache x
   data.augment_on, against what the fastest ADPM step consumes: "GPU waits" when it is slower.
Cases run in that order; compile cases last, and any case that would start after --budget-s is
listed as skipped, so the command ends in time (the budget plus at most one compilation). Writes OUT/gpu_check.md (one table) and
OUT/gpu_check.json (with the device name), and prints the table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from benchmarks import data_throughput  # noqa: E402  (synthetic photos, timing per wall and CPU second)
from benchmarks import speed  # noqa: E402  (models, batches and optimizers of the speed benchmark)

from adpm_dist.config import DataConfig, load_config  # noqa: E402

MODELS = {  # label -> (overrides, joint step?)
    "prior alone": ([], False),
    "ADPM exact": ([], True),
    "ADPM --quick levers": (speed.QUICK_DEFAULTS, True),
}
LOADER_SETTINGS = [("none", "cpu"), ("none", "device"), ("host", "cpu"), ("host", "device"), ("device", "device")]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny config, 32 px, few images, CPU-friendly (seconds)")
    p.add_argument("--out", default="runs/gpu_check")
    p.add_argument("--budget-s", type=float, default=360.0, help="no case starts after this many seconds")
    p.add_argument("--batch", type=int, default=0, help="train batch (default 32, the paper's; --tiny 4)")
    p.add_argument("--steps", type=int, default=0, help="timed train steps per case (default 10; --tiny 1)")
    p.add_argument("--images", type=int, default=0, help="loader images per epoch (default 1024; --tiny 32)")
    p.add_argument("--workers", type=int, default=-1, help="loader workers (default min(8, CPUs); --tiny 0)")
    p.add_argument("--compile-backend", default="", help="torch.compile backend (default inductor; --tiny eager)")
    p.add_argument("--compile-models", nargs="*", choices=list(MODELS), default=None, metavar="MODEL",
                   help="models timed with torch.compile (default all; --tiny the prior alone)")
    args = p.parse_args(argv)
    args.config = speed.TINY_CONFIG if args.tiny else speed.PAPER_CONFIG
    args.batch = args.batch or (4 if args.tiny else 32)
    args.steps = args.steps or (1 if args.tiny else 10)
    args.images = args.images or (32 if args.tiny else 1024)
    args.workers = args.workers if args.workers >= 0 else (0 if args.tiny else min(8, os.cpu_count() or 1))
    args.compile_backend = args.compile_backend or ("eager" if args.tiny else "inductor")
    if args.compile_models is None:
        args.compile_models = ["prior alone"] if args.tiny else list(MODELS)
    return args


# ---------------------------------------------------------------- timing on a device

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_call(fn, device, iters: int) -> float:
    """Seconds per call over `iters` calls after one warm-up call (the best of two passes)."""
    fn()
    sync(device)
    best = float("inf")
    for _ in range(2 if iters > 1 else 1):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        sync(device)
        best = min(best, (time.perf_counter() - start) / iters)
    return best


def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device) -> int:
    """Peak device memory since reset_peak (CUDA), else this process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---------------------------------------------------------------- 1. train steps

def train_case(cfg, k: int, device, args, overrides, joint: bool, channels_last: bool, compiled: bool) -> dict:
    model = speed.fresh_model(cfg, k, *overrides).to(device).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = speed.optimizer_for(model, speed.with_overrides(cfg, overrides))
    batch = speed.synthetic_batch(args.batch, cfg.data.image_size, k, seed=1)
    t, eps = speed.diffusion_inputs(cfg, batch["label"], k)
    x = batch["image"].to(device).contiguous(memory_format=fmt)
    y, t, eps = batch["label"].to(device), t.to(device), eps.to(device)
    forward = torch.compile(model, backend=args.compile_backend) if compiled else model

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = forward(x, y, t, eps, joint=joint)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    reset_peak(device)
    start = time.perf_counter()
    step()  # first call: compilation, allocator, Adam's state
    sync(device)
    first = time.perf_counter() - start
    seconds = per_call(step, device, args.steps)
    return {"images_per_s": args.batch / seconds, "ms_per_step": 1e3 * seconds, "first_step_s": first,
            "peak_memory_gb": peak_bytes(device) / 1e9}


def train_plan(compile_models: list[str], tiny: bool) -> list[tuple[str, bool, bool]]:
    """(model, channels_last, compile): eager cases first, compile ones last (the slow ones); --tiny
    compiles one case only (the code path, in seconds)."""
    eager = [(m, cl, False) for cl in (False, True) for m in MODELS]
    layouts = (True,) if tiny else (False, True)
    return eager + [(m, cl, True) for cl in layouts for m in MODELS if m in compile_models]


# ---------------------------------------------------------------- 2. predict, 3. Adam

def predict_ratio(cfg, k: int, device, args) -> dict:
    model = speed.fresh_model(cfg, k, *speed.QUICK_DEFAULTS).to(device).eval()
    images = speed.synthetic_batch(args.batch, cfg.data.image_size, k)["image"].to(device)

    def run(fn):
        def call():
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
                fn()
        return per_call(call, device, max(args.steps // 2, 1)) / len(images)

    prior = run(lambda: model.prior_probs(images))
    sampled = run(lambda: model.sample(images, sampler=speed.QUICK_SAMPLER, steps=speed.QUICK_STEPS,
                                       generator=torch.Generator().manual_seed(0)))
    return {"prior_ms_per_image": 1e3 * prior, "sampler": f"{speed.QUICK_SAMPLER}-{speed.QUICK_STEPS}",
            "sampler_ms_per_image": 1e3 * sampled, "predict_ratio": sampled / prior}


def adam_times(cfg, k: int, device, args) -> dict:
    """ms of one optimizer step of ADPM exact's parameters: the engine's Adam vs fused=True."""
    out = {}
    for kind in ("engine", "fused"):
        model = speed.fresh_model(cfg, k).to(device).train()
        optimizer = speed.optimizer_for(model, cfg, kind)
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        out[kind] = 1e3 * per_call(optimizer.step, device, args.steps)
    return out


# ---------------------------------------------------------------- 4. the loader

def loader_shards(args, workdir: Path) -> Path:
    from adpm_dist.data.prepare import prepare

    size = (60, 45) if args.tiny else (600, 450)
    images = data_throughput.make_images(workdir / f"images_{args.images}_{size[0]}", args.images, size)
    out = workdir / f"shards_{args.images}_{size[0]}"
    if not (out / "manifest.json").is_file():
        prepare("imagefolder", out, root=images, folds=0, image_size=32 if args.tiny else 256,
                samples_per_shard=max(1, args.images // max(8, 2 * max(args.workers, 1))), progress=False)
    return out


def loader_rates(args, device, shards: Path, image_size: int) -> list[dict]:
    from adpm_dist.data.feed import DataFeed
    from adpm_dist.data.manifest import load_manifest

    manifest = load_manifest(shards)
    rows = []
    for cache, augment_on in LOADER_SETTINGS:
        data = DataConfig(image_size=image_size, augment_on=augment_on, cache=cache, num_workers=args.workers)
        start = time.perf_counter()
        feed = DataFeed(data, manifest, device)
        fill = time.perf_counter() - start

        def epoch(e):
            n = 0
            for batch in feed.train_batches("train", args.batch, epoch=e, seed=0, num_workers=args.workers):
                n += len(batch["key"])
            sync(device)
            return n

        epoch(0)  # warm: page cache, allocator, first worker start
        wall, per_cpu = data_throughput.timed(lambda: epoch(1))
        rows.append({"cache": cache, "augment_on": augment_on, "images_per_s": wall, "images_per_cpu_s": per_cpu,
                     "cache_fill_s": fill if cache != "none" else None})
    return rows


# ---------------------------------------------------------------- report

def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def markdown(result: dict) -> str:
    lines = [f"GPU check on **{result['device']}** (torch {result['torch']}, {result['when']}, "
             f"{result['elapsed_s']:.0f} s); `{result['command']}`", "",
             f"| what | setting | images/s | ms | peak memory GB | note |", "|---|---|---|---|---|---|"]
    for r in result["train"]:
        setting = f"channels_last {'on' if r['channels_last'] else 'off'}, compile {'on' if r['compile'] else 'off'}"
        if "skipped" in r:
            lines.append(f"| train step bf16: {r['model']} | {setting} | | | | skipped: {r['skipped']} |")
            continue
        lines.append(f"| train step bf16: {r['model']} | {setting} | {r['images_per_s']:.0f} | {r['ms_per_step']:.1f} "
                     f"| {r['peak_memory_gb']:.2f} | first step {r['first_step_s']:.1f} s |")
    if p := result.get("predict"):
        lines.append(f"| predict bf16 (--quick model) | {p['sampler']} vs prior alone | | "
                     f"{p['sampler_ms_per_image']:.3f} / {p['prior_ms_per_image']:.3f} per image | | "
                     f"predict ratio {p['predict_ratio']:.2f} |")
    if a := result.get("adam"):
        lines.append(f"| Adam step (ADPM exact) | engine vs fused=True | | {a['engine']:.1f} / {a['fused']:.1f} | | "
                     f"fused {a['engine'] / a['fused']:.2f}x |")
    step = result.get("fastest_adpm_images_per_s")
    for r in result.get("loader", []):
        waits = "" if step is None else ("GPU waits" if r["images_per_s"] < step else "keeps up") + \
            f" (step takes {step:.0f}/s)"
        fill = f", cache filled in {r['cache_fill_s']:.1f} s" if r["cache_fill_s"] is not None else ""
        lines.append(f"| loader, {result['loader_workers']} workers | data.cache={r['cache']}, "
                     f"data.augment_on={r['augment_on']} | {r['images_per_s']:.0f} | | | "
                     f"{r['images_per_cpu_s']:.0f} img per CPU-s; {waits}{fill} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse(argv)
    threads = torch.get_num_threads()
    if args.tiny:  # one intra-op thread: on a busy small CPU more threads only wait for each other
        torch.set_num_threads(1)
    try:
        return run(args, argv)
    finally:
        torch.set_num_threads(threads)


def run(args, argv) -> int:
    started = time.perf_counter()
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    cfg = load_config(ROOT / args.config)
    k, out = 6, Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    left = lambda: args.budget_s - (time.perf_counter() - started)  # noqa: E731
    result = {"device": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
              "config": args.config, "batch": args.batch, "image_size": cfg.data.image_size,
              "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": "python -m benchmarks.gpu_check " + shlex.join(sys.argv[1:] if argv is None else argv),
              "train": [], "loader_workers": args.workers}
    plan = train_plan(args.compile_models, args.tiny)
    for i, (model, cl, compiled) in enumerate(plan):
        overrides, joint = MODELS[model]
        row = {"model": model, "channels_last": cl, "compile": compiled}
        if left() <= 0:
            row["skipped"] = "time budget"
        else:
            row.update(train_case(cfg, k, device, args, overrides, joint, cl, compiled))
        result["train"].append(row)
        print(json.dumps(row), flush=True)
        if i == 2 * len(MODELS) - 1:  # after the eager cases: the rest before the slow compile cases
            result["predict"] = predict_ratio(cfg, k, device, args)
            result["adam"] = adam_times(cfg, k, device, args)
            adpm = [r["images_per_s"] for r in result["train"] if "ADPM" in r["model"] and "skipped" not in r]
            result["fastest_adpm_images_per_s"] = max(adpm) if adpm else None
            result["loader"] = loader_rates(args, device, loader_shards(args, out / "data"), cfg.data.image_size)
    adpm = [r["images_per_s"] for r in result["train"] if "ADPM" in r["model"] and "skipped" not in r]
    result["fastest_adpm_images_per_s"] = max(adpm) if adpm else None
    result["elapsed_s"] = time.perf_counter() - started
    text = markdown(result)
    (out / "gpu_check.md").write_text(text + "\n")
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    print(f"wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
