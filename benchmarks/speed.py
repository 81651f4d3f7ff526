"""Speed, memory and fidelity of ADPM against its prior network, side by side, in one run (issues 4, 17).

    OMP_NUM_THREADS=1 python -m benchmarks.speed --quick [--tiny] [key=value ...]
    OMP_NUM_THREADS=1 python -m benchmarks.speed --config configs/pad_ufes.yaml --untrained [--memory] [key=value ...]
    OMP_NUM_THREADS=1 python -m benchmarks.speed --config configs/digits_lt.yaml --shards data/digits_lt \
        --workdir runs/speed [--checkpoint runs/x/checkpoints/best.pt] [key=value ...]

--quick: the paper's size (configs/pad_ufes.yaml: 224 px, ResNet-50 DCG, 6144-wide denoiser) with
random weights and random images, the recommended settings (QUICK_DEFAULTS, overridable), one
prior-only and one joint step type, the prior alone and the recommended sampler; ends with exactly
one line ``train_step_ratio=<x> predict_ratio=<y>``. ``--tiny`` does the same on the tiny test
config (seconds: the smoke test).

The full run:
1. Trains a model once with ``adpm_dist.runtime.engine.train`` (or loads ``--checkpoint``; ``--untrained``
   times randomly initialised weights, on random images without ``--shards``, and skips the
   macro-F1 part: timings do not depend on weights).
2. Per-image predict time on one batch: the prior network alone, truncated-250 with cached image
   features, the DiffMIC-style uncached chain (``--uncached-rounds``), respaced-S and DDIM-S for
   each S of ``--fast-steps``, and the parts (E: the denoiser's image encoder once, M: one denoiser
   step). Untrained: for both denoiser encoders (its own backbone and ``model.encoder=prior``).
3. Train-step time (forward + backward + Adam step, ``--train-batch``): prior-only (warm-up) step vs
   the joint step for each denoiser encoder x ``model.prior_mean`` (eval | train_batch), with the
   optimizer's share and the FLOPs of forward + backward (torch.utils.flop_counter).
4. ``--memory``: peak resident memory of fresh processes that run two training steps / one
   prediction at two batch sizes (VmHWM, /proc/self/status); the slope is memory per image, the
   intercept the fixed part; the largest batch for 24 GB and 80 GB follows from the two.
5. Macro-F1 on the whole evaluation part for each sampler (stochastic ones over several seeds).
Methods are timed interleaved over several rounds and the best round is kept (the machine is
shared: the minimum is the least disturbed). Prints a table with the command and appends a dated
section to ``--results``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from adpm_dist.config import ConfigError, from_dict, load_config  # noqa: E402
from adpm_dist.data.manifest import load_manifest  # noqa: E402
from adpm_dist.data.stream import eval_batches, train_batches  # noqa: E402
from adpm_dist.data.transforms import build_transform  # noqa: E402
from adpm_dist.evaluate import classification_metrics  # noqa: E402
from adpm_dist.methods import build_model  # noqa: E402
from adpm_dist.runtime.checkpoint import load_checkpoint  # noqa: E402
from adpm_dist.runtime.optim import build_optimizer  # noqa: E402

PAPER_CONFIG = "configs/pad_ufes.yaml"      # the paper's architecture at 224 px
TINY_CONFIG = "configs/digits_lt_tiny.yaml"
# What --quick measures unless overridden: the levers this benchmark recommends (benchmarks/RESULTS.md,
# "ADPM at nearly the cost of its prior"): mean from the CE's train-mode prior pass, the denoiser on the
# prior's feature map, respaced sampling with few steps.
QUICK_DEFAULTS = ["model.prior_mean=train_batch", "model.encoder=prior"]
QUICK_SAMPLER, QUICK_STEPS = "respaced", 5
PRIOR_MEANS = ("eval", "train_batch")
GB = 1e9
# What a timing reads: the process's CPU time by default. With one torch thread the work of a call is
# its CPU seconds, which other jobs on a shared machine barely change; wall time (--clock wall) also
# counts the time the scheduler gave to them.
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def timed_rounds(methods: dict, rounds: int) -> dict[str, float]:
    """Best wall time of each method; methods are interleaved so that load changes hit all alike.

    methods: name -> (fn, max_rounds). Returns name -> min seconds.
    """
    times: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(rounds):
        for name, (fn, max_rounds) in methods.items():
            if r < max_rounds:
                start = clock()
                fn()
                times[name].append(clock() - start)
    return {name: min(v) for name, v in times.items() if v}


def trained_checkpoint(cfg, args) -> Path:
    if args.checkpoint:
        return Path(args.checkpoint)
    from adpm_dist.runtime.engine import train

    cfg.run.output_dir = str(Path(args.workdir) / "run")
    cfg.run.overwrite = True  # a scratch run: a second benchmark in the same --workdir starts it over
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


def fresh_model(cfg, class_count: int, *overrides: str):
    """An untrained model of ``cfg`` with ``overrides`` (seeded: every variant starts from the same draw)."""
    torch.manual_seed(0)
    return build_model(with_overrides(cfg, overrides), [1] * class_count)


def with_overrides(cfg, overrides) -> object:
    """A copy of ``cfg`` with ``key=value`` overrides applied (as on the command line)."""
    from dataclasses import asdict

    out = from_dict(asdict(cfg))
    for item in overrides:
        key, value = item.split("=", 1)
        section, name = key.split(".")
        setattr(getattr(out, section), name, type(getattr(getattr(out, section), name))(value))
    return out


def synthetic_batch(n: int, size: int, class_count: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random normalised images and cycling labels: timings do not depend on the pixels."""
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(n, 3, size, size, generator=g), "label": torch.arange(n) % class_count}


def diffusion_inputs(cfg, labels: torch.Tensor, class_count: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    t = torch.randint(0, cfg.diffusion.timesteps, (len(labels),), generator=gen)
    return t, torch.randn(len(labels), class_count, generator=gen)


# --- predict -------------------------------------------------------------------------------------

def predict_methods(model, images, *, steps: int, fast: list[int], samplers: list[str], rounds: int,
                    truncated_rounds: int, uncached_rounds: int, parts: bool = True) -> dict:
    """name -> (fn, max_rounds) for each way to predict one batch (prior alone first)."""
    def run(**kw):
        return lambda: model.sample(images, generator=torch.Generator().manual_seed(0), **kw)

    methods = {"prior only": (lambda: model.prior_probs(images), rounds)}
    for s in fast:
        for sampler in samplers:
            methods[f"{sampler}-{s}"] = (run(sampler=sampler, steps=s), rounds)
    if truncated_rounds > 0:
        methods[f"truncated-{steps}, cached"] = (run(sampler="truncated", steps=steps), truncated_rounds)
    if uncached_rounds > 0:
        methods[f"DiffMIC-style truncated-{steps}, uncached"] = (
            run(sampler="truncated", steps=steps, cache_features=False), uncached_rounds)
    if parts:  # the sampler is made of P + E + S * M (+ its own arithmetic)
        out = model.prior(images)
        feats, mu = model.encode(images, out), model.prior_probs(images)
        t = torch.full((len(images),), len(model.scheduler) // 2)
        methods["  part: image encoder once (E)"] = (lambda: model.encode(images, out), rounds)
        methods["  part: one denoiser step (M)"] = (lambda: model.denoiser(feats, mu, mu, t), rounds)
    return methods


def predict_times(models: dict, images, rounds: int, **kw) -> dict[str, dict[str, float]]:
    """encoder label -> method -> ms per image, all models' methods interleaved in one set of rounds."""
    with torch.no_grad():
        methods = {}
        for label, model in models.items():
            model.sample(images, sampler="ddim", steps=2)  # warm-up: allocator, first-call overheads
            for name, value in predict_methods(model, images, rounds=rounds, **kw).items():
                methods[(label, name)] = value
        best = timed_rounds(methods, rounds)
    out: dict[str, dict[str, float]] = {label: {} for label in models}
    for (label, name), seconds in best.items():
        out[label][name] = seconds / len(images) * 1e3
    return out


# --- train step ----------------------------------------------------------------------------------

def optimizer_for(model, cfg, adam: str = "engine"):
    """The engine's optimizer (runtime/optim.py), or the same groups with torch's fused Adam kernel
    (``adam="fused"``: one kernel over all tensors; on CPU the engine's default steps them one by one,
    on CUDA torch defaults to its multi-tensor (foreach) path)."""
    optimizer = build_optimizer(model, cfg.train)
    if adam == "fused":
        for group in optimizer.param_groups:
            group["fused"] = True
    return optimizer


def step_fn(model, optimizer, batch, *, joint: bool, prior_mean: str):
    """One optimizer step; returns (seconds of forward + backward, seconds of Adam step + zero_grad)."""
    x, y, t, eps = batch

    def step() -> tuple[float, float]:
        model.prior_mean = prior_mean
        start = clock()
        model(x, y, t, eps, joint=joint)["loss"].backward()
        mid = clock()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return mid - start, clock() - mid
    return step


def train_step_times(steps: dict, rounds: int) -> dict[str, tuple[float, float]]:
    """name -> (best total ms, best optimizer ms), interleaved rounds after one warm-up round
    (which also allocates Adam's state)."""
    for fn in steps.values():
        fn()
    totals: dict[str, list[float]] = {k: [] for k in steps}
    opts: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            fwd_bwd, opt = fn()
            totals[name].append(1e3 * (fwd_bwd + opt))
            opts[name].append(1e3 * opt)
    return {k: (min(totals[k]), min(opts[k])) for k in steps}


def step_flops(model, batch, *, joint: bool, prior_mean: str) -> int:
    """FLOPs of one forward + backward (torch.utils.flop_counter: matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    x, y, t, eps = batch
    model.prior_mean = prior_mean
    with FlopCounterMode(display=False) as counter:
        model(x, y, t, eps, joint=joint)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def saved_activation_bytes(model, batch, *, joint: bool, prior_mean: str) -> int:
    """Bytes autograd keeps for backward in one training forward (parameters excluded, storages
    counted once): the activation memory of a step, whatever the allocator does."""
    x, y, t, eps = batch
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params and storage.device.type != "meta":
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    model.prior_mean = prior_mean
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(x, y, t, eps, joint=joint)["loss"]
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


# --- memory probes (fresh processes) --------------------------------------------------------------

def proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def probe(cfg, kind: str, batch_size: int, class_count: int, sampler: str, steps: int) -> dict:
    """Run in a fresh process: resident memory after building, and its peak through two training
    steps (kind=train) or one prediction (kind=predict) at ``batch_size``."""
    model = fresh_model(cfg, class_count)
    batch = synthetic_batch(batch_size, cfg.data.image_size, class_count)
    built = proc_status_kb("VmRSS") * 1024
    if kind == "train":
        model.train()
        optimizer = build_optimizer(model, cfg.train)
        t, eps = diffusion_inputs(cfg, batch["label"], class_count)
        step = step_fn(model, optimizer, (batch["image"], batch["label"], t, eps), joint=True,
                       prior_mean=cfg.model.prior_mean)
        step(), step()   # the second step has Adam's state and the gradients live at once
    else:
        with torch.no_grad():
            model.eval().sample(batch["image"], sampler=sampler, steps=steps)
    return {"built": built, "peak": proc_status_kb("VmHWM") * 1024}


def run_probe(config: str, overrides: list[str], kind: str, batch_size: int, class_count: int,
              sampler: str, steps: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.speed", "--config", config, "--untrained",
           "--probe", kind, "--probe-batch", str(batch_size), "--classes", str(class_count),
           "--probe-sampler", sampler, "--probe-steps", str(steps), *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def linear_memory(small: tuple[int, dict], large: tuple[int, dict]) -> tuple[float, float]:
    """(fixed bytes, bytes per image) of peak = fixed + b * per_image through two (batch, probe) points."""
    (b1, p1), (b2, p2) = small, large
    per_image = (p2["peak"] - p1["peak"]) / (b2 - b1)
    return p1["peak"] - b1 * per_image, per_image


def largest_batch(capacity: float, fixed: float, per_image: float) -> int:
    """floor((capacity - fixed) / per_image): the biggest batch whose modelled peak fits."""
    return max(0, math.floor((capacity - fixed) / per_image)) if per_image > 0 else 0


def state_bytes(model) -> dict[str, int]:
    """fp32 bytes of parameters, gradients and Adam's moments (+ AMSGrad's max for the prior)."""
    prior = sum(p.numel() for p in model.prior.parameters())
    total = sum(p.numel() for p in model.parameters())
    return {"parameters": 4 * total, "gradients": 4 * total, "adam": 4 * (2 * total + prior)}


# --- macro-F1 -------------------------------------------------------------------------------------

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


# --- main ------------------------------------------------------------------------------------------

def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="", help=f"default: configs/digits_lt.yaml; --quick: {PAPER_CONFIG}")
    parser.add_argument("--shards", default="", help="digits-LT shards (python -m adpm_dist.data.prepare); "
                        "without them --untrained times random images")
    parser.add_argument("--workdir", default="runs/speed")
    parser.add_argument("--checkpoint", default="", help="skip training, use this best.pt")
    parser.add_argument("--untrained", action="store_true", help="time random weights of --config; no macro-F1")
    parser.add_argument("--quick", action="store_true", help="paper size, untrained, recommended settings; ends "
                        "with one line train_step_ratio=<x> predict_ratio=<y> (a few minutes on 2 cores)")
    parser.add_argument("--tiny", action="store_true", help=f"with --quick: {TINY_CONFIG} (seconds; smoke test)")
    parser.add_argument("--classes", type=int, default=6, help="classes of the random labels (no --shards)")
    parser.add_argument("--image-size", type=int, default=0, help="with --untrained: resize inputs (paper: 224)")
    parser.add_argument("--batch", type=int, default=0, help="images per predict call (default 256; --quick 32)")
    parser.add_argument("--train-batch", type=int, default=0, help="train-step batch (default train.batch_size; "
                        "--quick 32, the paper's; --tiny 8)")
    parser.add_argument("--fast-steps", default="5,10", help="S of the timed respaced-S and DDIM-S rows")
    parser.add_argument("--sampler", default=QUICK_SAMPLER, help="the recommended sampler (targets, --quick)")
    parser.add_argument("--steps", type=int, default=QUICK_STEPS, help="its step count")
    parser.add_argument("--f1-steps", default="1,2,5,10", help="S values of respaced-S and DDIM-S in the macro-F1 "
                        "table")
    parser.add_argument("--respace-start", type=int, default=250,
                        help="also score respaced/DDIM over positions 0..N-1 (diffusion.respace_start=N); 0: skip")
    parser.add_argument("--rounds", type=int, default=0, help="interleaved timing rounds (best kept; default 5, "
                        "--quick 2)")
    parser.add_argument("--truncated-rounds", type=int, default=1, help="rounds of the cached truncated-250 row")
    parser.add_argument("--uncached-rounds", type=int, default=0, help="rounds of the DiffMIC-style uncached row")
    parser.add_argument("--train-rounds", type=int, default=0, help="timed train steps per variant (default 3, "
                        "--quick 2)")
    parser.add_argument("--count-batch", type=int, default=2, help="images of the FLOP and saved-activation counts")
    parser.add_argument("--memory", action="store_true", help="peak-memory probes in fresh processes")
    parser.add_argument("--memory-batches", default="2,8", help="the two batch sizes of the memory probes")
    parser.add_argument("--seeds", type=int, default=3, help="sampling seeds for the macro-F1 of stochastic samplers")
    parser.add_argument("--threads", type=int, default=1, help="torch threads while timing")
    parser.add_argument("--adam", choices=("engine", "fused"), default="engine",
                        help="train steps with the engine's Adam, or the same with fused=True")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="cpu",
                        help="cpu: process CPU time (robust on a shared machine, with --threads 1); wall")
    parser.add_argument("--results", default=str(ROOT / "benchmarks/RESULTS.md"))
    parser.add_argument("--probe", choices=("train", "predict"), help=argparse.SUPPRESS)
    parser.add_argument("--probe-batch", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--probe-sampler", default=QUICK_SAMPLER, help=argparse.SUPPRESS)
    parser.add_argument("--probe-steps", type=int, default=QUICK_STEPS, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.quick:
        args.untrained = True
        args.config = args.config or (TINY_CONFIG if args.tiny else PAPER_CONFIG)
        args.overrides = [*QUICK_DEFAULTS, *args.overrides]
        args.batch, args.train_batch = args.batch or 32, args.train_batch or (8 if args.tiny else 32)
        args.rounds, args.train_rounds = args.rounds or 2, args.train_rounds or 1
    args.config = args.config or "configs/digits_lt.yaml"
    args.batch, args.rounds, args.train_rounds = args.batch or 256, args.rounds or 5, args.train_rounds or 3
    if not (args.untrained or args.shards):
        parser.error("--shards is required unless --untrained or --quick")
    return args


def main(argv: list[str] | None = None) -> int:
    global clock
    args = parse(argv)
    clock = CLOCKS[args.clock]
    command = "python -m benchmarks.speed " + shlex.join(sys.argv[1:] if argv is None else argv)
    overrides = ([f"data.shards={args.shards}"] if args.shards else []) + \
        ([f"data.image_size={args.image_size}"] if args.image_size else []) + list(args.overrides)
    try:
        cfg = load_config(ROOT / args.config, overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    manifest = load_manifest(args.shards) if args.shards else None
    names = manifest.class_names if manifest else [str(k) for k in range(args.classes)]
    k = len(names)
    if args.probe:  # internal: one memory probe in this fresh process
        print(json.dumps(probe(cfg, args.probe, args.probe_batch, k, args.probe_sampler, args.probe_steps)))
        return 0
    if args.quick:
        return quick(cfg, args, k)

    # models: untrained -> one per denoiser encoder (its own backbone, and the prior's map)
    own = cfg.model.encoder if cfg.model.encoder != "prior" else cfg.model.backbone
    variants = {"own encoder": [f"model.encoder={own}"], "encoder=prior": ["model.encoder=prior"]}
    if args.untrained:
        models = {label: fresh_model(cfg, k, *ov).eval() for label, ov in variants.items()}
        epoch = "untrained"
    else:
        cfg, model, epoch = load_model(trained_checkpoint(cfg, args), args.shards, k)
        models = {"own encoder" if cfg.model.encoder != "prior" else "encoder=prior": model}

    if manifest:
        eval_tf = build_transform(cfg.data.image_size, train=False)
        images = next(iter(eval_batches(manifest, [cfg.data.eval_part], args.batch, eval_tf)))["image"]
        tf = build_transform(cfg.data.image_size, train=True, hflip=False, rotation=0.0)
        parts = [p for p in manifest.parts if p != cfg.data.eval_part]
        train = next(iter(train_batches(manifest, parts, args.train_batch or cfg.train.batch_size, tf, epoch=0,
                                        seed=0)))
    else:
        images = synthetic_batch(args.batch, cfg.data.image_size, k)["image"]
        train = synthetic_batch(args.train_batch or cfg.train.batch_size, cfg.data.image_size, k, seed=1)
    steps = cfg.diffusion.test_timesteps
    fast = sorted({int(v) for v in args.fast_steps.split(",") if v} | {args.steps})

    predict = predict_times(models, images, args.rounds, steps=steps, fast=fast, samplers=["respaced", "ddim"],
                            truncated_rounds=args.truncated_rounds, uncached_rounds=args.uncached_rounds)
    print(json.dumps(predict, indent=1), flush=True)
    f1_model = None if args.untrained else next(iter(models.values()))
    del models  # memory for the train-mode models below

    # train steps: both encoders x both prior means, and the prior-only step, on fresh train-mode models
    t, eps = diffusion_inputs(cfg, train["label"], k)
    batch = (train["image"], train["label"], t, eps)
    train_models = {label: fresh_model(cfg, k, *ov).train() for label, ov in variants.items()}
    optimizers = {label: optimizer_for(m, cfg, args.adam) for label, m in train_models.items()}
    first = next(iter(train_models))
    kinds = {"prior-only step": (first, False, "eval")}
    for label in train_models:
        for mean in PRIOR_MEANS:
            kinds[f"joint, {label}, prior_mean={mean}"] = (label, True, mean)
    steps_fns = {name: step_fn(train_models[label], optimizers[label], batch, joint=joint, prior_mean=mean)
                 for name, (label, joint, mean) in kinds.items()}
    train_ms = train_step_times(steps_fns, args.train_rounds)
    # FLOPs and saved activations are linear in the batch: counted on --count-batch images, per image
    small = tuple(v[:args.count_batch] for v in batch)
    flops = {name: step_flops(train_models[label], small, joint=joint, prior_mean=mean) / len(small[0])
             for name, (label, joint, mean) in kinds.items()}
    saved = {name: saved_activation_bytes(train_models[label], small, joint=joint, prior_mean=mean) / len(small[0])
             for name, (label, joint, mean) in kinds.items()}
    print(json.dumps({"train_ms": train_ms, "flops": flops, "saved": saved}, indent=1), flush=True)
    states = {label: state_bytes(m) for label, m in train_models.items()}
    del train_models, optimizers

    memory = {}
    if args.memory:
        b1, b2 = (int(v) for v in args.memory_batches.split(","))
        for label, ov in variants.items():
            for kind in ("train", "predict"):
                points = [(b, run_probe(args.config, [*overrides, *ov], kind, b, k, args.sampler, args.steps))
                          for b in (b1, b2)]
                memory[(label, kind)] = (points, *linear_memory(*points))
                print(label, kind, memory[(label, kind)], flush=True)

    f1 = {}
    if not args.untrained:
        model = f1_model
        full = eval_batches(manifest, [cfg.data.eval_part], cfg.train.eval_batch_size, eval_tf)
        runs = [("prior only", "prior", 0, 1, 0), (f"truncated-{steps}", "truncated", steps, args.seeds, 0)]
        starts = [0] + ([args.respace_start] if args.respace_start else [])
        for s in [int(v) for v in args.f1_steps.split(",") if v]:
            for n in starts:
                suffix = f" from {n}" if n else ""
                runs += [(f"respaced-{s}{suffix}", "respaced", s, args.seeds, n),
                         (f"ddim-{s}{suffix}", "ddim", s, args.seeds, n)]
        for label, sampler, s, seeds, n in runs:
            values = [sampler_f1(model, full, names, sampler, s, seed, n) for seed in range(seeds)]
            f1[label] = (statistics.mean(values), statistics.pstdev(values))
            print(label, f1[label], flush=True)

    text = report(cfg, args, command, epoch, len(images), len(batch[0]), predict, train_ms, flops, saved, states,
                  memory, f1, manifest)
    print(text)
    results = Path(args.results)
    previous = results.read_text() if results.is_file() else "# Benchmark results\n"
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results.write_text(previous.rstrip("\n") + f"\n\n## ADPM vs its prior: speed, memory, fidelity ({stamp}, "
                       "benchmarks/speed.py)\n\n" + text + "\n")
    print(f"appended to {results}")
    return 0


def quick(cfg, args, k: int) -> int:
    """Paper size, random weights and images: one joint vs prior-only step type and one sampler vs the
    prior alone; the last line is ``train_step_ratio=<x> predict_ratio=<y>``."""
    started = time.perf_counter()
    model = fresh_model(cfg, k)
    optimizer = optimizer_for(model.train(), cfg, args.adam)
    train = synthetic_batch(args.train_batch, cfg.data.image_size, k, seed=1)
    t, eps = diffusion_inputs(cfg, train["label"], k)
    batch = (train["image"], train["label"], t, eps)
    mean = cfg.model.prior_mean
    train_ms = train_step_times({"prior-only step": step_fn(model, optimizer, batch, joint=False, prior_mean=mean),
                                 "joint step": step_fn(model, optimizer, batch, joint=True, prior_mean=mean)},
                                args.train_rounds)
    images = synthetic_batch(args.batch, cfg.data.image_size, k)["image"]
    predict = predict_times({"model": model.eval()}, images, args.rounds, steps=args.steps, fast=[args.steps],
                            samplers=[args.sampler], truncated_rounds=0, uncached_rounds=0, parts=False)["model"]
    train_ratio = train_ms["joint step"][0] / train_ms["prior-only step"][0]
    predict_ratio = predict[f"{args.sampler}-{args.steps}"] / predict["prior only"]
    m = cfg.model
    print(f"quick: prior {m.backbone} + local {m.local_backbone or m.backbone}, denoiser encoder {m.encoder}, "
          f"hidden {m.hidden_dim}, image {cfg.data.image_size} px, model.prior_mean={mean}, Adam {args.adam}; train batch "
          f"{args.train_batch}: joint {train_ms['joint step'][0]:.0f} ms, prior-only "
          f"{train_ms['prior-only step'][0]:.0f} ms; predict batch {args.batch}: {args.sampler}-{args.steps} "
          f"{predict[f'{args.sampler}-{args.steps}']:.1f} ms/image, prior {predict['prior only']:.1f} ms/image; "
          f"{args.clock} time; {time.perf_counter() - started:.0f} s wall, load {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    print(f"train_step_ratio={train_ratio:.2f} predict_ratio={predict_ratio:.2f}")
    return 0


def report(cfg, args, command, epoch, n, train_batch, predict, train_ms, flops, saved, states, memory, f1,
           manifest) -> str:
    steps, m = cfg.diffusion.test_timesteps, cfg.model
    rec = f"{args.sampler}-{args.steps}"
    prior_step = train_ms["prior-only step"][0]
    lines = [
        f"Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '?')} {command}`",
        "",
        f"Model: prior {m.backbone} (level {m.backbone_level}) + local {m.local_backbone or m.backbone} on "
        f"{m.num_crops} crops of {m.crop_size} px; denoiser hidden {m.hidden_dim}, tokens {m.token_dim}; image "
        f"{cfg.data.image_size} px; weights: {epoch if epoch == 'untrained' else f'epoch {epoch}'}. torch threads "
        f"{args.threads}; clock: {args.clock} time; load average at the end {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores (shared machine: each timing is the best of interleaved rounds).",
        "",
        f"| predict (batch {n}), ms / image | " + " | ".join(predict) + " | x prior |",
        "|---|" + "---|" * (len(predict) + 1),
    ]
    labels = list(predict)
    for name in predict[labels[0]]:
        vals = [predict[lab].get(name, float("nan")) for lab in labels]
        ratios = " / ".join(f"{v / predict[lab]['prior only']:.2f}" for v, lab in zip(vals, labels))
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {ratios} |")
    lines += ["", f"| train step (batch {train_batch}) | ms | x prior-only | Adam step + zero_grad, ms | "
              "GFLOP fwd+bwd / image | x prior-only FLOPs | saved activations, MB / image |",
              "|---|---|---|---|---|---|---|"]
    for name, (ms, opt) in train_ms.items():
        lines.append(f"| {name} | {ms:.0f} | {ms / prior_step:.2f} | {opt:.0f} | {flops[name] / 1e9:.1f} | "
                     f"{flops[name] / flops['prior-only step']:.2f} | {saved[name] / 1e6:.1f} |")
    lines += ["", "| fp32 state | " + " | ".join(states) + " |", "|---|" + "---|" * len(states)]
    for key in ("parameters", "gradients", "adam"):
        lines.append(f"| {key}, GB | " + " | ".join(f"{s[key] / GB:.2f}" for s in states.values()) + " |")
    if memory:
        lines += ["", "| peak memory (VmHWM of a fresh process) | batch: GB | fixed, GB | per image, MB | "
                  "largest batch in 24 GB | in 80 GB |", "|---|---|---|---|---|---|"]
        for (label, kind), (points, fixed, per_image) in memory.items():
            what = "train (2 steps, Adam)" if kind == "train" else f"predict ({rec})"
            pts = ", ".join(f"{b}: {p['peak'] / GB:.2f}" for b, p in points)
            lines.append(f"| {label}, {what} | {pts} | {fixed / GB:.2f} | {per_image / 1e6:.0f} | "
                         f"{largest_batch(24 * GB, fixed, per_image)} | {largest_batch(80 * GB, fixed, per_image)} |")
    if f1:
        lines += ["", f"| macro-F1 on `{cfg.data.eval_part}` ({manifest.num_samples[cfg.data.eval_part]} images) "
                  f"| mean | std over {args.seeds} seeds |", "|---|---|---|",
                  *[f"| {key} | {mean:.4f} | {std:.4f} |" for key, (mean, std) in f1.items()]]
    rows = []
    for label in labels:
        ratio = predict[label][rec] / predict[label]["prior only"]
        rows.append((f"{label}: {rec} / prior-only predict", f"{ratio:.2f}x", "<= 1.3x", ratio <= 1.3))
        best = min((v[0], name) for name, v in train_ms.items() if label in name)
        rows.append((f"{label}: best joint step / prior-only step ({best[1].split(', ')[-1]})",
                     f"{best[0] / prior_step:.2f}x", "<= 1.6x", best[0] / prior_step <= 1.6))
    if f1 and rec in f1:
        lost = 100 * (f1[f"truncated-{steps}"][0] - f1[rec][0])
        rows.append((f"macro-F1 lost, {rec} vs truncated-{steps}", f"{lost:.2f} pt", "<= 0.5 pt", lost <= 0.5))
    lines += ["", "| target | measured | goal | met |", "|---|---|---|---|",
              *[f"| {a} | {b} | {c} | {'yes' if ok else 'NO'} |" for a, b, c, ok in rows]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
