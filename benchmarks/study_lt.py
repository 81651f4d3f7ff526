"""Studies on long-tailed sets, each checked against its held-out test part (issue 28, "Measured").

    python -m benchmarks.study_lt [--sets digits_ir50 digits_ir100 photo_ir100] [--out runs/study_lt]
        [--space benchmarks/study_space.yaml] [--folds 3] [--seeds 0] [--max-concurrent 2]
        [--results benchmarks/RESULTS.md] [key=value ...]

Per set (digits_ir<R>: digits-LT at imbalance ratio R; photo_ir<R>: benchmarks/photo_lt.py's real
photographs at R, 14 classes):
1. shards with --folds folds and a held-out `test` part, prepared once under OUT/<set>/shards;
2. ``tune/study.py`` on them (the study engine on Ray Tune: every candidate of --space x folds x
   seeds; the CV selects, `test` is never read); resumable: run the same command again;
3. the recommendation's ``recipe.yaml`` trained as ``launch/train.py --config recipe.yaml`` trains it
   (refit on every labelled image, then scored once on `test`) into OUT/<set>/recipe_runs/<hash of the
   recipe>, so a changed recommendation is trained anew.
Then one RESULTS section: per set the leaderboard (estimate over folds x seeds, its 95% bootstrap
interval, the tail F1, the CPU-hours), the recommendation, its test score and whether the test score
falls inside the estimate's interval. key=value arguments go to every trial (shorter training, say).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.tables import write_section  # noqa: E402

MARKERS = ("<!-- study-lt:begin -->", "<!-- study-lt:end -->")
HEADING = "## Studies: which method for which long-tailed set (issue 28)"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=["digits_ir50", "digits_ir100", "photo_ir100"])
    p.add_argument("--out", default="runs/study_lt")
    p.add_argument("--config", default="configs/digits_lt.yaml")
    p.add_argument("--space", default=str(ROOT / "benchmarks" / "study_space.yaml"),
                   help="candidates and their spaces (tune/study.py --space); its keys are the candidates")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--results", default="benchmarks/RESULTS.md")
    p.add_argument("--no-run", action="store_true", help="only the table, from what has finished")
    p.add_argument("overrides", nargs="*", help="key=value for every trial and the recipe")
    return p.parse_args(argv)


def set_kind(name: str) -> tuple[str, float]:
    kind, _, ir = name.partition("_ir")
    if kind not in ("digits", "photo") or not ir.replace(".", "").isdigit():
        raise SystemExit(f"--sets: {name!r} is not digits_ir<R> or photo_ir<R>")
    return kind, float(ir)


def shards_for(name: str, where: Path, folds: int) -> Path:
    """The set's shards (folds + `test`), prepared once."""
    from adpm_dist.data.prepare import prepare

    shards = where / "shards"
    if (shards / "manifest.json").is_file():
        return shards
    kind, ir = set_kind(name)
    if kind == "digits":
        prepare("digits_lt", shards, folds=folds, imbalance_ratio=ir, seed=0, progress=False)
    else:
        from benchmarks.photo_lt import build

        photos = where / "photos"
        if not (photos / "photo_lt.json").is_file():
            build(photos, ir=ir)
        prepare("imagefolder", shards, root=photos / "train", test_root=photos / "test", folds=folds,
                image_size=32, seed=0, progress=False)
    return shards


def run_study(args, name: str, where: Path, shards: Path) -> int:
    from adpm_dist.tune.cli import study  # the command line of tune/study.py

    dataset = "digits_lt" if name.startswith("digits") else "imagefolder"
    methods = ",".join(json_keys(Path(args.space)))
    return study.main(["--dataset", dataset, "--config", args.config, "--shards", str(shards), "--methods", methods,
                       "--space", args.space, "--seeds", *map(str, args.seeds), "--output", str(where / "study"),
                       "--max-concurrent", str(args.max_concurrent), "--progress-interval", "120",
                       *(["--resume"] if (where / "study" / "search.json").is_file() else []), *args.overrides])


def json_keys(space: Path) -> list[str]:
    import yaml

    return list(yaml.safe_load(space.read_text()))


def recipe_run_dir(where: Path) -> Path | None:
    """Where the study's current recipe is trained: one directory per recipe text, so a recommendation that
    changes (a new rule, more trials) is never scored with the run of an earlier one."""
    import hashlib

    recipe = where / "study" / "recipe.yaml"
    if not recipe.is_file():
        return None
    return where / "recipe_runs" / hashlib.sha256(recipe.read_bytes()).hexdigest()[:12]


def recipe_metrics(where: Path) -> dict | None:
    """The current recipe's metrics.json, if it has been trained."""
    run = recipe_run_dir(where)
    metrics = run / "metrics.json" if run else None
    return json.loads(metrics.read_text()) if metrics and metrics.is_file() else None


def train_recipe(args, where: Path) -> dict | None:
    """The recommendation trained from recipe.yaml as launch/train.py would; its metrics (None without a recipe)."""
    from adpm_dist.config import load_config
    from adpm_dist.runtime.engine import train

    run = recipe_run_dir(where)
    if run is None:
        return None
    done = recipe_metrics(where)
    if done is not None:
        return done
    cfg = load_config(where / "study" / "recipe.yaml", [f"run.output_dir={run}", "train.resume=auto", *args.overrides])
    return train(cfg)


def section(args, argv: list[str], found: dict[str, tuple[dict, dict | None]]) -> str:
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [f"{dt.datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPUs, load average at the end {load}. Command:", "",
             "    python -m benchmarks.study_lt " + shlex.join(argv), "",
             f"{args.folds} folds x seeds {' '.join(map(str, args.seeds))}, a held-out balanced `test` part the study "
             "never reads; candidates and spaces from " + Path(args.space).name + ". Estimate: mean ± std of macro-F1 "
             "over (fold, seed); interval: 95% bootstrap of that mean; 'test': the recipe trained on every labelled "
             "image and scored once on `test`."]
    for name, (report, recipe) in found.items():
        lines += ["", f"### {name}", "", "| rank | candidate | selected | macro-F1, balanced prior [95%] | fold macro-F1 | "
                  "tail F1 | vs leader [95%] | verdict | CPU-h |", "|---:|---|---|---|---|---:|---|---|---:|"]
        for r in report["rows"]:
            mark = " **(recommended)**" if r["recommended"] else ""
            lines.append(f"| {r['rank']} | `{r['candidate']}`{mark} | {r['selected']} | {r['estimate']:.3f} "
                         f"[{r['estimate_low']:.3f}, {r['estimate_high']:.3f}] | {r['fold_macro_f1_mean']:.3f} ± "
                         f"{r['fold_macro_f1_std']:.3f} | {r['tail_f1']:.3f} | {r['vs_leader']} | {r['verdict']} | "
                         f"{r['cpu_hours']:.2f} |")
        lines += ["", verdict(report, recipe)]
    return "\n".join(lines)


def verdict(report: dict, recipe: dict | None) -> str:
    rec = report["recommendation"]
    if rec is None:
        return "No recommendation (no candidate complete)."
    d = report["decisions"][rec.name]
    text = f"Recommendation: `{rec.name}`, estimate {d.estimate:.3f} (95% interval {d.low:.3f} .. {d.high:.3f})"
    if recipe is None:
        return text + "; its recipe has not been trained yet."
    test = recipe["macro_f1"]
    inside = "inside" if d.low <= test <= d.high else "outside"
    partial = f" PARTIAL: {'; '.join(report['partial'])}." if report["partial"] else ""
    return text + f"; recipe on `test`: macro-F1 {test:.3f}, {inside} the interval.{partial}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    out = Path(args.out).resolve()
    from adpm_dist.tune.study.report import consolidate_study

    found, status = {}, 0
    for name in args.sets:
        set_kind(name)
        where = out / name
        if not args.no_run:
            shards = shards_for(name, where, args.folds)
            rc = run_study(args, name, where, shards)
            status = max(status, rc)
            if rc == 0:
                train_recipe(args, where)
        if (where / "study" / "search.json").is_file():
            found[name] = (consolidate_study(where / "study"), recipe_metrics(where))
    block = section(args, argv, found)
    write_section(args.results, block, HEADING, MARKERS)
    print(block)
    return status


if __name__ == "__main__":
    sys.exit(main())
