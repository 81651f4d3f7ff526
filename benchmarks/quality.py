"""Quality benchmark: ADPM against long-tail baselines on the same pipeline (issue 8, docs/baselines.md).

    python -m benchmarks.quality [--irs 10 50 100] [--seeds 0 1 2] [--methods adpm ce ...] [--jobs 2]
        [--config configs/digits_lt.yaml] [--out runs/quality] [--baseline-epochs N] [key=value ...]
    python -m benchmarks.quality --shards shards/pad_ufes --config configs/pad_ufes.yaml ...   # any shards

1. Data: digits-LT prepared at each imbalance ratio into OUT/data/digits_lt_ir<IR> (kept between
   invocations), or the one shard directory given with --shards (then there is no IR loop).
2. Runs: one Ray Tune trial per (dataset, method, seed) through the study engine
   (adpm_dist/tune/batch.py: engine.train in the trial, as launch/train.py runs it) into
   OUT/runs/<dataset>/<method>/seed<seed>; a run whose metrics.json exists is skipped, an
   interrupted or failed one continues from its checkpoint (train.resume=auto). --jobs N runs N at a
   time on a loopback cluster (each with CPUs / N threads); with RAY_ADDRESS (or --address) the runs
   go to that cluster instead: `ray job submit -- python -m benchmarks.quality ...`. Ray's state is
   in OUT/ray. Overrides: config < the method's (METHODS in benchmarks/tables.py; with
   --baseline-epochs N the classifier methods also train.epochs=N; default: the config's epochs for
   every method) < the key=value arguments, which go to every run. Each run's resolved config is
   also written as launch.yaml in its directory (to repeat it by hand: launch/train.py --config
   launch.yaml). Times and defaults: docs/baselines.md.
   Fold-only shards (no `test` part: PAD-UFES-20, SCIN, Hyper-Kvasir): every (method, seed) runs
   once per outer fold k into .../seed<seed>_fold<k>, trained and checkpoint-selected on the other
   folds and scored once on fold k (the Tune search's outer loop; methods here have no grid).
3. Table: per dataset and method, mean +- sample std over the seeds (x outer folds) of macro-F1,
   balanced accuracy and the mean F1 of the head / medium / tail thirds of the classes by training
   count; written between the quality markers of --results (benchmarks/RESULTS.md) with the date
   and this command, and every run as a row of --csv. OUT/protocol.json lists every figure with
   the parts it was selected on and evaluated on (docs/baselines.md).
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.tables import (DIFFUSION_ENTRIES, METHODS, METRICS, dataset_table,  # noqa: E402
                                         frequency_groups, groups_line, mean_std, replace_section, run_scores)
from adpm_dist.config import ConfigError, from_dict, load_config, save_config, set_key  # noqa: E402
from adpm_dist.runtime.record import stale_keys  # noqa: E402
from adpm_dist.data.digits_lt import DEFAULT_VAL_PER_CLASS  # noqa: E402
from adpm_dist.data.manifest import load_manifest  # noqa: E402
from adpm_dist.data.plan import plan_data  # noqa: E402
from adpm_dist.tune.protocol import entry, mean_entry, write_protocol  # noqa: E402
from adpm_dist.tune.trainable import COST_FILE  # noqa: E402

TIMING_FILE = "bench_seconds.json"  # written by the runner before the runs went through Ray; still read
LAUNCH_CONFIG = "launch.yaml"  # the run's resolved config, what launch/train.py gets


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--irs", type=float, nargs="+", default=[10, 50, 100], help="digits-LT imbalance ratios")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD",
                   help=f"benchmark entries (default: all): {', '.join(METHODS)}")
    p.add_argument("--shards", help="a prepared shard directory instead of digits-LT (no IR loop)")
    p.add_argument("--config", default="configs/digits_lt.yaml")
    p.add_argument("--out", default="runs/quality", help="data and run directories")
    p.add_argument("--results", default="benchmarks/RESULTS.md", help="markdown file that gets the table")
    p.add_argument("--csv", default="benchmarks/quality_runs.csv", help="one row per run")
    p.add_argument("--plot", default="docs/img/quality_macro_f1.png",
                   help="macro-F1 and tail F1 per method, one panel per dataset ('' for none)")
    p.add_argument("--section", default="",
                   help="write the table into its own RESULTS section <!-- quality-SECTION:begin/end --> "
                        "(default: the main quality table)")
    p.add_argument("--heading", default="", help="heading of a new --section (default: '## Quality: SECTION')")
    add_runner_arguments(p)
    p.add_argument("--baseline-epochs", type=int, default=0,
                   help="train.epochs of the non-diffusion methods (0: the config's)")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every run (win over the method's)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    return args


def add_runner_arguments(p: argparse.ArgumentParser) -> None:
    """--jobs and --address: how every benchmark built on run_all hands its runs to the study engine."""
    p.add_argument("--jobs", type=int, default=1, help="training runs at a time (each gets CPUs / jobs threads)")
    p.add_argument("--address", default=None,
                   help="a Ray cluster to run on (default: RAY_ADDRESS if set, else a local loopback cluster)")


def datasets(args, out: Path) -> dict[str, Path]:
    """name -> shard directory: the given one, or digits-LT at every IR (prepared once, kept)."""
    if args.shards:
        shards = Path(args.shards).resolve()
        load_manifest(shards)  # fail now, not in every run
        return {shards.name: shards}
    from adpm_dist.data.prepare import prepare

    found = {}
    for ir in args.irs:
        name, shards = f"digits_lt_ir{ir:g}", out / "data" / f"digits_lt_ir{ir:g}"
        try:
            options = load_manifest(shards).options  # prepared by an older version: prepare again
            ready = (options.get("imbalance_ratio"), options.get("val_per_class")) == (ir, DEFAULT_VAL_PER_CLASS)
        except (FileNotFoundError, ValueError):
            ready = False
        if not ready:
            print(f"preparing {name} -> {shards}", flush=True)
            prepare("digits_lt", shards, imbalance_ratio=ir, val_per_class=DEFAULT_VAL_PER_CLASS, progress=False)
        found[name] = shards
    return found


def outer_folds(shards: Path) -> list[str | None]:
    """[None] (one run on the config's data.eval_part) unless the shards are fold-only: then every fold."""
    parts = list(load_manifest(shards).parts)
    folds = sorted((p for p in parts if p.startswith("fold") and p[4:].isdigit()), key=lambda p: int(p[4:]))
    return folds if "test" not in parts and len(folds) >= 2 else [None]


def run_name(seed: int, fold: str | None) -> str:
    return f"seed{seed}" if fold is None else f"seed{seed}_{fold}"


def run_overrides(args, entries: dict, method: str) -> list[str]:
    """The text overrides of a run: the method's, the baseline epochs, then the command's (they win)."""
    epochs = [] if method in DIFFUSION_ENTRIES or not args.baseline_epochs else [f"train.epochs={args.baseline_epochs}"]
    return [*entries[method][0], *epochs, *args.overrides]


def run_settings(shards: Path, run_dir: Path, seed: int, fold: str | None) -> dict:
    """What the runner sets itself, as typed values (a path never goes through YAML text)."""
    settings = {"data.shards": str(shards), "run.output_dir": str(run_dir), "run.seed": seed, "train.resume": "auto"}
    if fold is not None:  # outer fold: score fold k, train (and carve the validation data) on the others
        settings |= {"data.eval_part": fold, "data.train_parts": []}
    return settings


def resolved_config(args, overrides: list[str], settings: dict):
    """The run's resolved config (config < overrides < settings), what launch/train.py gets as a file."""
    cfg = load_config(args.config, overrides)
    for key, value in settings.items():
        set_key(cfg, key, value)
    return cfg


def clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def execute(args, runs: list, out: Path, show_eval: bool = True) -> dict[str, str]:
    """Train `runs` (tune.batch.BatchRun) as Ray Tune trials through the study engine, --jobs at a time,
    on a loopback cluster or the one in --address / RAY_ADDRESS; {run id: status}. `show_eval=False`:
    the progress never prints an evaluation score (benchmarks that choose on validation only)."""
    from adpm_dist.tune.batch import run_batch

    return run_batch(out / "ray", runs, jobs=args.jobs, address=args.address, show_eval=show_eval)


def run_all(args, data: dict[str, Path], out: Path, entries: dict = METHODS, show: str = "macro_f1") -> list[str]:
    """Every missing run of ``args.methods`` (names in ``entries``: name -> (overrides, label)), with
    one line each showing metrics.json's ``show``; returns the failed run directories."""
    from adpm_dist.tune.batch import batch_run

    todo, done = [], 0
    configs = [(name, m, s, k) for name in data for k in outer_folds(data[name]) for m in args.methods
               for s in args.seeds]
    stale = []
    for name, method, seed, fold in configs:
        run_dir = out / "runs" / name / method / run_name(seed, fold)
        cfg = resolved_config(args, run_overrides(args, entries, method), run_settings(data[name], run_dir, seed, fold))
        changed = stale_keys(run_dir, cfg)
        if changed == []:
            done += 1
        elif changed:
            stale.append(f"{run_dir}: {', '.join(changed)}")
        else:
            save_config(cfg, run_dir / LAUNCH_CONFIG)  # by hand: launch/train.py --config <run>/launch.yaml
            todo.append(batch_run(f"{name}/{method}/{run_name(seed, fold)}", f"{name} {method}", cfg))
    if stale:  # never mix a figure trained otherwise into the table
        raise SystemExit("finished runs were trained with other settings than this command would use "
                         "(another --out, or delete them to re-run):\n  " + "\n  ".join(stale))
    print(f"{len(configs)} runs: {done} already done, {len(todo)} to go ({args.jobs} at a time, on Ray)", flush=True)
    start = time.perf_counter()
    execute(args, todo, out, show_eval=not show.startswith("val_"))
    failed = []
    for run in todo:
        metrics = run.run_dir / "metrics.json"
        if metrics.is_file():
            result = f"{show.replace('_', ' ')} {json.loads(metrics.read_text())[show]:.3f} in {run_seconds(run.run_dir):.0f} s"
        else:
            failed.append(str(run.run_dir))
            result = f"FAILED, log: {run.run_dir / 'train.log'}"
        print(f"{run.id}: {result}", flush=True)
    print(f"{len(todo) - len(failed)} of {len(todo)} runs finished in {clock(time.perf_counter() - start)}", flush=True)
    return failed


def run_seconds(run_dir: Path) -> float:
    """Training wall time of a run over its attempts (cost.json, written by the trainable; older runs:
    bench_seconds.json of the subprocess runner); NaN if neither is there."""
    for name, key in ((COST_FILE, "wall_s"), (TIMING_FILE, "seconds")):
        if (run_dir / name).is_file():
            return float(json.loads((run_dir / name).read_text())[key])
    return float("nan")


def class_counts(shards: Path, run_dir: Path) -> tuple[list[str], list[int]]:
    """Class names and training counts from the manifest (the run's training parts, before the
    validation data): the same for every seed and method."""
    manifest = load_manifest(shards)
    cfg = from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    parts = plan_data(manifest, cfg).train_parts
    names = manifest.class_names
    return names, [sum(manifest.counts[p][c] for p in parts) for c in names]


def collect(args, data: dict[str, Path], out: Path) -> tuple[list[dict], dict[str, str]]:
    """One row per finished run, and per dataset the head/medium/tail line."""
    rows, group_lines = [], {}
    for name, shards in data.items():
        finished = [(m, s, out / "runs" / name / m / run_name(s, k)) for k in outer_folds(shards)
                    for m in args.methods for s in args.seeds]
        finished = [(m, s, d) for m, s, d in finished if (d / "metrics.json").is_file()]
        if not finished:
            continue
        names, counts = class_counts(shards, finished[0][2])
        groups = frequency_groups(counts)
        group_lines[name] = groups_line(names, counts, groups)
        for method, seed, run_dir in finished:
            metrics = json.loads((run_dir / "metrics.json").read_text())
            seconds = run_seconds(run_dir)
            rows.append({"dataset": name, "method": method, "seed": seed, **run_scores(metrics, names, groups),
                         "accuracy": metrics["accuracy"], "val_macro_f1": metrics["val_macro_f1"],
                         "best_epoch": metrics["best_epoch"], "seconds": seconds,
                         "run_dir": str(run_dir.relative_to(out)),  # relative to --out: portable
                         "eval_part": metrics.get("eval_part", "")})
    return rows, group_lines


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["dataset", "method", "seed", *METRICS, "accuracy", "val_macro_f1", "best_epoch", "seconds", "run_dir",
              "eval_part"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def run_parts(shards: Path, run_dir: Path) -> tuple[list[str], list[str], str]:
    """(trained on, checkpoint selected on, evaluated on) of a finished run, from its config and the manifest."""
    cfg = from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    plan = plan_data(load_manifest(shards), cfg)
    return plan.train_parts, [plan.val_part] if plan.val_part else plan.train_parts, plan.eval_part


def protocol_entries(rows: list[dict], data: dict[str, Path], out: Path) -> list[dict]:
    """protocol.json: every run of the CSV, and every table cell as the mean of its runs."""
    entries, cells = [], {}
    for r in rows:
        train, selected, evaluated = run_parts(data[r["dataset"]], out / r["run_dir"])
        e = entry(f"run {r['run_dir']}", selected, [evaluated], train, r["macro_f1"])
        entries.append(e)
        cells.setdefault((r["dataset"], r["method"]), []).append(e)
    for (name, method), runs in cells.items():
        values = [e["value"] for e in runs]
        entries.append(mean_entry(f"RESULTS.md {name} `{method}`: mean ± std over {len(runs)} run(s)", runs,
                                  float(np.mean(values))))
    return entries


def markdown(args, argv: list[str], rows: list[dict], group_lines: dict[str, str], failed: list[str],
             fold_only: bool = False) -> str:
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    epochs = (f"train.epochs={args.baseline_epochs}" if args.baseline_epochs else "the config's train.epochs")
    lines = [
        f"{dt.datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPUs, load average at the end {load} "
        f"({args.jobs} run(s) at a time; minutes per run are wall time under that load). Command:", "",
        "    python -m benchmarks.quality " + shlex.join(argv), "",
        f"Config {args.config}; ADPM, isotropic and prior: the config's epochs (train.prior_warmup_epochs + "
        f"train.epochs); the other methods: {epochs}; then the command's key=value arguments (they win). "
        "Every run selects its checkpoint on validation data (digits-LT: its balanced `val` part) and is scored "
        "once on the evaluation part. Mean ± sample std over seeds "
        f"{' '.join(map(str, args.seeds))}. Head / medium / tail: thirds of the classes by training count "
        "(class (count) below); their F1 is the mean per-class F1 of the group.",
    ]
    if fold_only:
        lines += ["", "Fold-only shards (no `test` part): every method ran once per outer fold k and seed, trained "
                      "and checkpoint-selected on the other folds, scored once on fold k; mean ± std over outer folds "
                      "x seeds. protocol.json (next to the runs) lists each run's parts."]
    for name, line in group_lines.items():
        lines += ["", f"### {name}", "", line, "", dataset_table([r for r in rows if r["dataset"] == name],
                                                                  args.methods)]
    if failed:
        lines += ["", "Failed runs (not in the table): " + ", ".join(failed)]
    return "\n".join(lines)


def section_markers(args) -> tuple:
    """(heading, markers) of the RESULTS section this table goes to: the main one, or --section's own."""
    if not args.section:
        return ()
    return (args.heading or f"## Quality: {args.section}",
            (f"<!-- quality-{args.section}:begin -->", f"<!-- quality-{args.section}:end -->"))


def plot(rows: list[dict], methods: list[str], path: Path) -> None:
    """Macro-F1 (bar, mean +- std over seeds) and tail-third F1 (dot) of every method, one panel per
    dataset; diffusion entries and classifier baselines in two colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["dataset"] for r in rows))
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(4.0 * len(names), 0.32 * len(methods) + 1.4),
                             sharey=True, squeeze=False)
    y = range(len(methods))
    for ax, name in zip(axes[0], names):
        def stat(method: str, key: str) -> tuple[float, float]:
            return mean_std([r[key] for r in rows if r["dataset"] == name and r["method"] == method])
        f1_mean, f1_std = zip(*(stat(m, "macro_f1") for m in methods))
        tail_mean = [stat(m, "tail_f1")[0] for m in methods]
        colours = ["tab:purple" if m in DIFFUSION_ENTRIES else "tab:grey" for m in methods]
        ax.barh(y, f1_mean, xerr=np.nan_to_num(f1_std), color=colours, alpha=0.8, error_kw={"lw": 0.8})
        ax.plot(tail_mean, y, "o", color="tab:orange", ms=4)
        ax.axvline(np.nanmax(f1_mean), color="black", lw=0.6, ls=":")
        low = np.nanmin([*f1_mean, *tail_mean])
        ax.set(title=name, xlabel="macro-F1 (bar) / tail F1 (dot), evaluation part", xlim=(max(0.0, low - 0.05), 1.0))
    axes[0][0].set_yticks(list(y), methods, fontsize=8)
    axes[0][0].invert_yaxis()
    fig.suptitle("Quality benchmark: diffusion entries (purple) vs long-tail baselines (grey); "
                 "orange dot: tail-third F1; dotted: best macro-F1", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        load_config(args.config, args.overrides)  # a bad key fails here, not in every run
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    data = datasets(args, out)
    failed = run_all(args, data, out)
    rows, group_lines = collect(args, data, out)
    write_csv(Path(args.csv), rows)
    write_protocol(out, protocol_entries(rows, data, out))
    results = Path(args.results)
    text = results.read_text() if results.is_file() else "# Benchmark results\n"
    fold_only = any(outer_folds(shards) != [None] for shards in data.values())
    block = markdown(args, argv, rows, group_lines, failed, fold_only)
    results.write_text(replace_section(text, block, *section_markers(args)))
    print(block)
    print(f"wrote {results} ({len(rows)} runs) and {args.csv}")
    if args.plot:
        plot(rows, args.methods, Path(args.plot))
        print(f"wrote {args.plot}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
