"""Lever sweep: which settings the paper leaves open move ADPM, judged on validation only (issue 8).

    python -m benchmarks.levers [--irs 50 100] [--seeds 0 1] [--levers adpm alpha_one ...]
        [--sampling as_trained ddim_10 ...] [--jobs 2] [--out runs/quality] [--no-run] [key=value ...]

1. Training levers (LEVERS in benchmarks/tables.py): ADPM trained with one setting
   changed, by quality.py's resumable runner, into OUT/runs/<dataset>/<lever>/seed<seed>. With the
   default --out the `adpm` and `isotropic` entries are the quality benchmark's own runs (reused).
2. Sampling levers (SAMPLING_LEVERS): the selected checkpoint of every `adpm` run sampled again on its
   validation data with one sampling setting changed; kept in <run>/sampling_levers.json.
3. Two tables per dataset, of validation numbers only, between the levers markers of --results.
   The evaluation part is never read here: the runs score it once at their end (their metrics.json),
   but choosing a lever must not look at it. Use quality.py to score a chosen lever on it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from benchmarks import quality  # noqa: E402  (benchmarks/quality.py: data preparation and the run launcher)

from benchmarks.tables import (LEVERS, SAMPLING_LEVERS, format_mean_std, lever_table,  # noqa: E402
                                         validation_scores, write_section)
from adpm_dist.config import ConfigError, load_config  # noqa: E402

MARKERS = ("<!-- levers:begin -->", "<!-- levers:end -->")
SAMPLING_FILE = "sampling_levers.json"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--irs", type=float, nargs="+", default=[50, 100], help="digits-LT imbalance ratios")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS), metavar="LEVER",
                   help=f"training levers (default: all): {', '.join(LEVERS)}")
    p.add_argument("--sampling", nargs="*", default=list(SAMPLING_LEVERS), choices=list(SAMPLING_LEVERS),
                   metavar="LEVER", help=f"sampling levers on the adpm runs (default: all): {', '.join(SAMPLING_LEVERS)}")
    p.add_argument("--config", default="configs/digits_lt.yaml")
    p.add_argument("--out", default="runs/quality", help="data and run directories (shared with quality.py)")
    p.add_argument("--results", default="benchmarks/RESULTS.md", help="markdown file that gets the tables")
    quality.add_runner_arguments(p)
    p.add_argument("--no-run", action="store_true",
                   help="train nothing: tables from the finished runs only (sampling levers still computed)")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every training run")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    if args.sampling and "adpm" not in args.levers:
        p.error("--sampling re-samples the adpm runs: keep 'adpm' in --levers (or pass --sampling with no names)")
    # what quality.py's runner reads
    args.methods, args.shards, args.baseline_epochs = args.levers, None, 0
    return args


def sample_validation(run_dir: Path, overrides: list[str], accelerator) -> float:
    """Validation macro-F1 of a run's selected checkpoint, sampled with ``overrides`` (same images,
    same sampling seed as the run's own validation)."""
    from adpm_dist.config import parse_overrides, set_key, validate
    from adpm_dist.data.manifest import load_manifest
    from adpm_dist.data.stream import eval_batches
    from adpm_dist.data.transforms import build_transform
    from adpm_dist.methods import method_for
    from adpm_dist.models.adpm import noise_law, sampling_spec
    from adpm_dist.runtime.sampling import predict, score
    from adpm_dist.data.plan import plan_data
    from adpm_dist.predict import load_model

    loaded = load_model(run_dir, device=str(accelerator.device))
    cfg = loaded.cfg
    for key, value in parse_overrides(overrides):
        set_key(cfg, key, value)
    validate(cfg)
    loaded.model.noise, loaded.model.sampling = noise_law(cfg), sampling_spec(cfg)  # the lever's test-time settings
    manifest = load_manifest(cfg.data.shards)
    plan = plan_data(manifest, cfg)
    val_parts, val_keys = plan.val_source()
    batches = eval_batches(manifest, val_parts, cfg.train.eval_batch_size,
                           build_transform(cfg.data.image_size, train=False), include_keys=val_keys)
    pred = predict(method_for(cfg), loaded.model, batches, accelerator, cfg.run.seed, "validation")
    return score(pred, loaded.class_names)["macro_f1"]


def sampling_rows(args, data: dict[str, Path], out: Path) -> list[dict]:
    """One row per (adpm run, sampling lever); computed once and kept next to the run."""
    from accelerate import Accelerator

    accelerator, rows = None, []
    for name in data:
        for seed in args.seeds:
            run_dir = out / "runs" / name / "adpm" / f"seed{seed}"
            if not (run_dir / "metrics.json").is_file():
                continue
            cache_file = run_dir / SAMPLING_FILE
            cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
            for lever in args.sampling:
                overrides = SAMPLING_LEVERS[lever][0]
                if cache.get(lever, {}).get("overrides") != overrides:
                    accelerator = accelerator or Accelerator(cpu=True)
                    f1 = sample_validation(run_dir, overrides, accelerator)
                    cache[lever] = {"overrides": overrides, "val_macro_f1": f1}
                    cache_file.write_text(json.dumps(cache, indent=2))
                    print(f"{name} adpm seed {seed}: sampling {lever}: validation macro-F1 {f1:.3f}", flush=True)
            base = cache.get("as_trained", {}).get("val_macro_f1")
            for lever in args.sampling:
                f1 = cache[lever]["val_macro_f1"]
                rows.append({"dataset": name, "seed": seed, "lever": lever, "val_macro_f1": f1,
                             "change": f1 - base if base is not None else float("nan")})
    return rows


def training_rows(args, data: dict[str, Path], out: Path) -> list[dict]:
    rows = []
    for name in data:
        for lever in args.levers:
            for seed in args.seeds:
                run_dir = out / "runs" / name / lever / f"seed{seed}"
                if (run_dir / "metrics.json").is_file():
                    metrics = json.loads((run_dir / "metrics.json").read_text())
                    rows.append({"dataset": name, "lever": lever, "seed": seed, **validation_scores(metrics),
                                 "max_lambda": max(metrics["noise_levels"].values(), default=None)})
    return rows


def markdown(args, argv: list[str], train_rows: list[dict], sample_rows: list[dict], failed: list[str]) -> str:
    lines = [
        f"{dt.datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPUs ({args.jobs} training run(s) at a time). Command:",
        "", "    python -m benchmarks.levers " + shlex.join(argv), "",
        f"Config {args.config}, seeds {' '.join(map(str, args.seeds))}; validation data only, mean ± sample "
        "std over seeds. *Selected*: the best validation (what picks the checkpoint, so optimistic); *mean*: "
        "over all validations of the run; *diffusion - own prior*: mean over all validations of the "
        "diffusion's macro-F1 minus that of the prior it conditions on, in the same run. Sampling levers: the "
        "selected `adpm` checkpoint sampled again on the same images with the same seed (*change*: against "
        "`as_trained`).",
    ]
    for name in dict.fromkeys(r["dataset"] for r in train_rows + sample_rows):
        lines += ["", f"### {name}: training levers", "",
                  lever_table([r for r in train_rows if r["dataset"] == name], LEVERS)]
        mine = [r for r in sample_rows if r["dataset"] == name]
        if mine:
            lines += ["", f"### {name}: sampling levers on the selected `adpm` checkpoints", "",
                      "| lever | what | runs | val macro-F1 | change |", "|---|---|---|---|---|"]
            for lever, (_, label) in SAMPLING_LEVERS.items():
                these = [r for r in mine if r["lever"] == lever]
                if these:
                    lines.append(f"| `{lever}` | {label} | {len(these)} | "
                                 f"{format_mean_std([r['val_macro_f1'] for r in these])} | "
                                 f"{format_mean_std([r['change'] for r in these])} |")
    if failed:
        lines += ["", "Failed runs (not in the tables): " + ", ".join(failed)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    data = quality.datasets(args, out)
    failed = [] if args.no_run else quality.run_all(args, data, out, entries=LEVERS, show="val_macro_f1")  # never the eval part
    train_rows = training_rows(args, data, out)
    sample_rows = sampling_rows(args, data, out) if args.sampling else []
    block = markdown(args, argv, train_rows, sample_rows, failed)
    write_section(args.results, block, "## Levers: what moves ADPM (validation only)", MARKERS)
    print(block)
    print(f"wrote {args.results}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
