"""Does the study's answer hold on long-tailed sets it never saw? (issue 32, "A calibration benchmark")

    python -m benchmarks.study_calibration [--out runs/study_calibration]
        [--space benchmarks/calibration_space.yaml] [--folds 3] [--seeds 0] [--results benchmarks/RESULTS.md]
        [--no-run] [--learning-curve] [--epoch-rules] [key=value ...] [--recipe-seeds S ...] [--draws all|NAME ...]

(key=value overrides go before the options that take several values: --recipe-seeds and --draws would take them.)

A draw is a long-tailed set with a large balanced `test` part, named KIND_irR_sS: digits-LT, photo-LT
(benchmarks/photo_lt.py), photot-LT (photo-LT with `--tiles`: each training patch inside one tile of
its photograph's training region, the tile its group, folds prepared with `--groups`) or shapes-LT
(benchmarks/shapes_lt.py, neither digits nor photographs) at imbalance ratio R, data seed S. None of the draws' seeds was used while the study was built (those used
seed 0). Per draw, resumable draw by draw (run the same command again; on 2 cores the whole benchmark
spans sessions):
1. shards: 3 folds + `test`, prepared once;
2. the study (tune/study.py on Ray) over the candidates of --space; the CV never reads `test`;
3. **every** candidate's recipe (recipe.py's rules: its CV choices fixed, trained on every CV fold)
   trained and scored once on `test`, each in its own run directory keyed by the recipe's text; its test
   macro-F1 is taken under the balanced prior (digits-LT's test part is what the draw left, not balanced);
   with `--recipe-seeds`, every recipe is also trained at those `run.seed` values (benchmarks/recipe_seeds.py:
   the regret on the mean over training runs, and what a perfect pick on one run loses on another).
Then, over the draws, for the current rule and, side by side, the rule before issue 32 (leader = best
fold-mean macro-F1, tie = the 3-pair bootstrap interval of the per-fold difference includes 0, the
cheapest tied candidate):
- regret: the best candidate's test macro-F1 minus the recommendation's (median, max, per draw);
- coverage: whether the recommendation's 95% interval holds its recipe's test score (Wilson interval);
  and whether it holds the test score of the CV's own models (each trial's best.pt on `test`,
  benchmarks/cv_model_scores.py): what the interval estimates, before the recipe's extra fold of data;
- whether the test-best candidate is among the recommendation's equals;
- Spearman's rank correlation between the CV figure and the test scores of the candidates.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import shlex
import sys
from pathlib import Path

import numpy as np

from benchmarks.calibration_curve import curve_fields, curve_section
from benchmarks.cv_model_scores import cv_models_scores
from benchmarks.recipe_epochs import draw_epoch_fields, epoch_section
from benchmarks.recipe_scores import balanced_score, score_and_spread, widened
from benchmarks.recipe_seeds import seed_fields, seed_section

ROOT = Path(__file__).resolve().parents[1]
MARKERS = ("<!-- study-calibration:begin -->", "<!-- study-calibration:end -->")
HEADING = "## Study calibration: the answer on long-tailed sets it never saw (issue 32)"
KINDS = ("digits", "photo", "photot", "shapes")
DRAWS = [f"{kind}_ir{ir}_s{seed}" for seed in (1, 2) for ir in (50, 100, 10) for kind in ("digits", "photo", "shapes")]


def parse_draw(name: str) -> tuple[str, float, int]:
    try:
        kind, ir, seed = name.split("_")
        assert kind in KINDS and ir.startswith("ir") and seed.startswith("s")
        return kind, float(ir[2:]), int(seed[1:])
    except (ValueError, AssertionError):
        raise SystemExit(f"--draws: {name!r} is not KIND_irR_sS with KIND {', '.join(KINDS)} (key=value "
                         "overrides go before --draws)") from None


def shards_for(name: str, where: Path, folds: int) -> Path:
    from adpm_dist.data.prepare import prepare

    shards = where / "shards"
    if (shards / "manifest.json").is_file():
        return shards
    kind, ir, seed = parse_draw(name)
    if kind == "digits":
        prepare("digits_lt", shards, folds=folds, imbalance_ratio=ir, seed=seed, progress=False)
        return shards
    images = where / "images"
    if not images.is_dir():
        if kind in ("photo", "photot"):
            from benchmarks.photo_lt import build
            build(images, ir=ir, seed=seed, tiles=kind == "photot")
        else:
            from benchmarks.shapes_lt import build
            build(images, ir=ir, seed=seed)
    groups = {"groups": images / "groups.csv"} if kind == "photot" else {}
    prepare("imagefolder", shards, root=images / "train", test_root=images / "test", folds=folds, image_size=32,
            seed=seed, progress=False, **groups)
    return shards


def run_study(args, name: str, where: Path, shards: Path) -> int:
    import yaml

    from adpm_dist.tune.cli import study  # what tune/study.py runs
    methods = ",".join(yaml.safe_load(Path(args.space).read_text()))
    dataset = "digits_lt" if name.startswith("digits") else "imagefolder"
    return study.main(["--dataset", dataset, "--config", args.config, "--shards", str(shards), "--methods", methods,
                       "--space", args.space, "--seeds", *map(str, args.seeds), "--output", str(where / "study"),
                       "--max-concurrent", str(args.max_concurrent), "--progress-interval", "300",
                       *(["--learning-curve"] if args.learning_curve else []),
                       *(["--resume"] if (where / "study" / "search.json").is_file() else []), *args.overrides])


def train_recipes(args, where: Path, report: dict) -> tuple[dict[str, float], dict[str, float], dict]:
    """Every complete candidate's recipe trained (a Ray batch, --max-concurrent at a time) and scored on
    `test`: (name -> test macro-F1 under the balanced prior, name -> its test_spread, training seed -> name ->
    test macro-F1 for the recipe's own `run.seed` and each of --recipe-seeds)."""
    from adpm_dist.config import load_config
    from adpm_dist.tune.batch import run_batch
    from adpm_dist.tune.experiment import load_search
    from adpm_dist.tune.study.recipe import write_recipe

    search = load_search(where / "study")
    runs, todo = {}, []
    own = None  # the recipes' own training seed: the study's base config's run.seed
    for e in report["estimates"]:
        if e.oof is None or e.selections[None].point is None:
            continue
        recipe = where / "recipes" / f"{e.name}.yaml"
        recipe.parent.mkdir(parents=True, exist_ok=True)
        write_recipe(recipe, search, e, where / "study", "calibration", "-")
        own = load_config(recipe).run.seed
        for seed in [own, *(s for s in args.recipe_seeds if s != own)]:
            runs[seed, e.name] = recipe_run(where, e.name, recipe, seed, own, todo)
    if todo and not args.no_run:
        run_batch(where / "recipe_batch", todo, jobs=args.max_concurrent, cpus_per_run=1.0)
    done = {key: run for key, run in runs.items() if (run / "metrics.json").is_file()}
    scored = {name: score_and_spread(run) for (seed, name), run in done.items() if seed == own}
    by_seed: dict[int, dict[str, float]] = {}
    for (seed, name), run in done.items():
        by_seed.setdefault(seed, {})[name] = scored[name][0] if seed == own else balanced_score(run)
    return {name: s for name, (s, _) in scored.items()}, {name: spread for name, (_, spread) in scored.items()}, by_seed


def recipe_run(where: Path, name: str, recipe: Path, seed: int, own: int, todo: list, *, runs: str = "recipe_runs",
               overrides: tuple[str, ...] = (), group: str | None = None) -> Path:
    """The run directory of ``recipe`` trained at ``seed`` (an earlier run of it, or a new one queued on
    ``todo``). The recipe's own seed keeps the directory name it always had (recipe text hash), so finished
    draws are not trained again; another seed is the same recipe with `run.seed` changed. ``runs``, ``overrides``,
    ``group``: the same recipe run another way, in its own directory (recipe_epochs.py: over its whole plan)."""
    from adpm_dist.config import load_config, set_key
    from adpm_dist.tune.batch import batch_run

    cfg = load_config(recipe, ([] if seed == own else [f"run.seed={seed}"]) + list(overrides))
    body = recipe.read_text().split("\n", 1)[1]  # the header names the file; the config is what counts
    label = f"{name}-{hashlib.sha256(body.encode()).hexdigest()[:12]}" + ("" if seed == own else f"-seed{seed}")
    run = trained_run(where, name, cfg, runs) or where / runs / label
    if not (run / "metrics.json").is_file():
        # no other key=value here: the recipe holds the study's base config with them, and its fixed choices
        # (train.epochs above all) must not be overridden again
        set_key(cfg, "run.output_dir", str(run))
        set_key(cfg, "train.resume", "auto")
        todo.append(batch_run(run.name, group or (name if seed == own else f"{name}_seed{seed}"), cfg))
    return run


def trained_run(where: Path, name: str, cfg, runs: str = "recipe_runs") -> Path | None:
    """An earlier run of this very recipe under ``where / runs``: its config.yaml, read with today's defaults for
    keys added since, equals ``cfg`` but for where it ran (a newer version of the package, or a reworded recipe
    header, must not retrain a finished draw)."""
    from adpm_dist.config import load_config
    from adpm_dist.tune.experiment import config_differences

    def comparable(c) -> dict:
        from adpm_dist.config import to_dict

        d = to_dict(c)
        d["run"].pop("output_dir"), d["train"].pop("resume")
        return d

    want = comparable(cfg)
    for run in sorted((where / runs).glob(f"{name}-*")):
        if (run / "metrics.json").is_file() and (run / "config.yaml").is_file():
            if not config_differences(comparable(load_config(run / "config.yaml")), want):
                return run
    return None


def old_rule(estimates: list) -> tuple[str | None, tuple[float, float], list[str]]:
    """The rule before issue 32: (recommendation, its 3-pair interval of the fold mean, the tied set)."""
    from adpm_dist.tune.study import stats
    from adpm_dist.tune.study.compare import COST_TOLERANCE, cost_per_trial

    pool = [e for e in estimates if e.complete]
    if not pool:
        return None, (math.nan, math.nan), []
    lead = max(pool, key=lambda e: (e.mean_std("macro_f1")[0], -estimates.index(e)))
    tied = [e for e in pool if e is lead or stats.covers_zero(stats.bootstrap_interval(list(
        stats.paired_differences(e.values("macro_f1"), lead.values("macro_f1")).values())))]
    cheapest = min(cost_per_trial(e) for e in tied)
    rec = max([e for e in tied if cost_per_trial(e) <= cheapest * (1 + COST_TOLERANCE)],
              key=lambda e: (e.mean_std("macro_f1")[0], -cost_per_trial(e)))
    return rec.name, stats.bootstrap_interval(list(rec.values("macro_f1").values())), [e.name for e in tied]


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(a) > 2 else math.nan


def draw_row(name: str, report: dict, tests: dict[str, float], spreads: dict[str, float] | None = None,
             cv_models: dict[str, float] | None = None) -> dict | None:
    """One draw's verdicts under both rules (None until every candidate's recipe is scored). ``spreads``: each
    recipe's test_spread, for the prediction-interval coverage (``*_predicted``); ``cv_models``: the CV's own
    models' test score per candidate (cv_model_scores.py), what the interval estimates (``*_cv_models``)."""
    from adpm_dist.tune.study.compare import equals

    est = [e for e in report["estimates"] if e.name in tests]
    rec = report["recommendation"]
    if rec is None or len(est) < len(report["estimates"]) or rec.name not in tests:
        return None
    best = max(tests.values())
    d = report["decisions"]
    old_name, (old_lo, old_hi), old_tied = old_rule(report["estimates"])
    names = [e.name for e in est]
    spreads = spreads or {}

    def predicted(rec: str, interval, centre: float) -> bool | None:
        if rec not in spreads:
            return None
        lo, hi = widened(interval, centre, spreads[rec])
        return lo <= tests[rec] <= hi

    old_centre = next(e.mean_std("macro_f1")[0] for e in est if e.name == old_name)
    return {"draw": name, "best": max(tests, key=tests.get), "best_test": best,
            "new_rec": rec.name, "new_regret": best - tests[rec.name],
            "new_covered": d[rec.name].low <= tests[rec.name] <= d[rec.name].high,
            "new_interval": (d[rec.name].low, d[rec.name].high), "new_test": tests[rec.name],
            "new_cv_models": (cv_models or {}).get(rec.name),
            "new_best_in_equals": max(tests, key=tests.get) in [e.name for e in equals(report["estimates"], d)],
            # the test-best is not ruled out: leader, equal or undecided (never "clearly worse")
            "new_best_kept": d[max(tests, key=tests.get)].verdict in ("leader", "equal", "undecided"),
            "new_spearman": spearman([d[n].estimate for n in names], [tests[n] for n in names]),
            "old_rec": old_name, "old_regret": best - tests[old_name], "old_test": tests[old_name],
            "old_covered": old_lo <= tests[old_name] <= old_hi, "old_interval": (old_lo, old_hi),
            "old_best_in_equals": max(tests, key=tests.get) in old_tied,
            "old_spearman": spearman([e.mean_std("macro_f1")[0] for e in est], [tests[n] for n in names]),
            "new_predicted": predicted(rec.name, (d[rec.name].low, d[rec.name].high), d[rec.name].estimate),
            "old_predicted": predicted(old_name, (old_lo, old_hi), old_centre),
            "near_chance": all(report["decisions"][n].estimate < 0.2 for n in names),
            # the study's own warning that more epochs may change the order: such a draw breaks the benchmark's
            # condition (epochs enough that no candidate is under-trained), so the summary also leaves it out
            "under_trained": any(w.startswith("under-trained") for w in report.get("warnings", [])),
            "tests": tests} | curve_fields(report, tests)


def rule_summary(rows: list[dict], rule: str) -> dict:
    """One rule over ``rows``: median / max regret, coverage with its Wilson interval, best among equals,
    mean Spearman."""
    from adpm_dist.tune.study.target import wilson_interval

    regret = [r[f"{rule}_regret"] for r in rows]
    covered = sum(r[f"{rule}_covered"] for r in rows)
    return {"draws": len(rows), "median_regret": float(np.median(regret)) if rows else math.nan,
            "max_regret": max(regret) if rows else math.nan, "covered": covered,
            "coverage_interval": wilson_interval(covered, len(rows)),
            "best_in_equals": sum(r[f"{rule}_best_in_equals"] for r in rows),
            "best_kept": sum(bool(r.get(f"{rule}_best_kept")) for r in rows),
            "predicted": sum(bool(r.get(f"{rule}_predicted")) for r in rows),
            "cv_models_covered": sum(r.get(f"{rule}_cv_models") is not None and
                                     r[f"{rule}_interval"][0] <= r[f"{rule}_cv_models"] <= r[f"{rule}_interval"][1]
                                     for r in rows),
            "cv_models_scored": sum(r.get(f"{rule}_cv_models") is not None for r in rows),
            "mean_spearman": mean_of_defined([r[f"{rule}_spearman"] for r in rows])}


def mean_of_defined(values: list[float]) -> float:
    """The mean of the values that are not NaN (a draw of two candidates has no rank correlation); NaN if none."""
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else math.nan


def summary(rows: list[dict]) -> dict:
    """Per rule over every draw; and the current rule over the draws its study did not call under-trained."""
    quiet = [r for r in rows if not r.get("under_trained")]
    return {"draws": len(rows), "new": rule_summary(rows, "new"), "old": rule_summary(rows, "old"),
            "new_quiet": rule_summary(quiet, "new")}


def section(argv: list[str], rows: list[dict], pending: list[str]) -> str:
    s = summary(rows)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [f"{dt.datetime.now():%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, load average at the end {load}. Command:",
             "", "    python -m benchmarks.study_calibration " + shlex.join(argv), "",
             f"{s['draws']} draw(s) complete; not yet: {', '.join(pending) or 'none'}.", "",
             "| rule | median regret | max regret | coverage of the 95% interval | ... widened by the test part's "
             "own spread | ... of the CV models' own test score | test-best among equals | ... or undecided | "
             "mean Spearman CV vs test |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for rule, title in (("new", "target prior + paired bootstrap + equivalence 0.01"),
                        ("old", "fold mean + 3-pair bootstrap (before issue 32)"),
                        ("new_quiet", "the first, on the draws without an under-trained warning")):
        r = s[rule]
        if not r["draws"]:
            continue
        lo, hi = r["coverage_interval"]
        lines.append(f"| {title} ({r['draws']} draws) | {r['median_regret']:.3f} | {r['max_regret']:.3f} | "
                     f"{r['covered']}/{r['draws']} (Wilson {lo:.2f}-{hi:.2f}) | {r['predicted']}/{r['draws']} | "
                     f"{str(r['cv_models_covered']) + '/' + str(r['cv_models_scored']) if r['cv_models_scored'] else '-'} | "
                     f"{r['best_in_equals']}/{r['draws']} | "
                     f"{r['best_kept'] if rule != 'old' else '-'}{'/' + str(r['draws']) if rule != 'old' else ''} | "
                     f"{r['mean_spearman']:+.2f} |")
    lines += ["", "| draw | test-best (macro-F1) | new: rec, test, interval, regret | its CV models on test | old: rec, "
              "test, interval, regret | Spearman new / old |", "|---|---|---|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['draw']}{' (under-trained)' if r.get('under_trained') else ''} | {r['best']} ({r['best_test']:.3f}) | {r['new_rec']}, {r['new_test']:.3f}, "
                     f"[{r['new_interval'][0]:.3f}, {r['new_interval'][1]:.3f}], {r['new_regret']:.3f} | "
                     f"{'-' if r.get('new_cv_models') is None else format(r['new_cv_models'], '.3f')} | "
                     f"{r['old_rec']}, {r['old_test']:.3f}, [{r['old_interval'][0]:.3f}, {r['old_interval'][1]:.3f}], "
                     f"{r['old_regret']:.3f} | {r['new_spearman']:+.2f} / {r['old_spearman']:+.2f} |")
    return "\n".join(lines + curve_section(rows) + seed_section(rows) + epoch_section(rows))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--draws", nargs="+", default=["all"])
    p.add_argument("--out", default="runs/study_calibration")
    p.add_argument("--config", default=str(ROOT / "configs" / "digits_lt.yaml"))
    p.add_argument("--space", default=str(ROOT / "benchmarks" / "calibration_space.yaml"))
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    p.add_argument("--no-run", action="store_true", help="only the table, from what has finished")
    p.add_argument("--learning-curve", action="store_true",
                   help="the studies also run their half runs (tune/study.py --learning-curve): the table adds the "
                        "recipe's expected score")
    p.add_argument("--recipe-seeds", type=int, nargs="+", default=[],
                   help="also train every recipe at these run.seed values: the table adds its regret on the mean "
                        "over training runs and the floor of a one-run regret (benchmarks/recipe_seeds.py)")
    p.add_argument("--epoch-rules", action="store_true",
                   help="also train every recipe over its whole plan with `test` tracked: the table adds the regret "
                        "when recipes stop by each epoch rule (benchmarks/recipe_epochs.py)")
    p.add_argument("overrides", nargs="*", help="key=value for every trial and recipe")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from adpm_dist.tune.study.report import consolidate_study
    from benchmarks.tables import write_section

    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    names = DRAWS if args.draws == ["all"] else args.draws
    out = Path(args.out).resolve()
    for name in names:  # every name before any work: `--draws a b key=value` would swallow the override
        parse_draw(name)
    rows, pending = [], []
    for name in names:
        where = out / name
        if not args.no_run:
            rc = run_study(args, name, where, shards_for(name, where, args.folds))
            if rc in (130, 143):  # Ctrl-C / SIGTERM: stop here (the same command resumes), not on to the next draw
                return rc
            if rc != 0:
                pending.append(name)
                continue
        if not (where / "study" / "search.json").is_file():
            pending.append(name)
            continue
        report = consolidate_study(where / "study")
        rec = report["recommendation"]
        tests, spreads, by_seed = train_recipes(args, where, report)
        row = draw_row(name, report, tests, spreads, cv_models_scores(where, [rec.name]) if rec is not None else {})
        row = row and row | seed_fields(rec.name, by_seed)
        if row and args.epoch_rules:
            def run_todo(todo: list, where: Path = where) -> None:
                from adpm_dist.tune.batch import run_batch

                if not args.no_run:
                    run_batch(where / "tracked_batch", todo, jobs=args.max_concurrent, cpus_per_run=1.0)
            row["epoch_rules"] = draw_epoch_fields(where, report, tests, run_todo)
        (rows.append(row) if row else pending.append(name))
        if row:
            (where / "calibration.json").write_text(json.dumps(row, indent=1, default=str))
            print(f"{name}: best {row['best']} {row['best_test']:.3f}; new {row['new_rec']} regret "
                  f"{row['new_regret']:.3f} covered {row['new_covered']}; old {row['old_rec']} regret "
                  f"{row['old_regret']:.3f}", flush=True)
    block = section(argv, rows, pending)
    write_section(args.results, block, HEADING, MARKERS)
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
