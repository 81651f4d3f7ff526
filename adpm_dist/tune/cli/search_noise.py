"""Five-fold CV x the alpha/beta noise grid as parallel Ray Tune trials, then the paper's tables.

    python tune/search_noise.py --dataset digits_lt [--alphas 0,1/6,1/4,1/2,1] [--betas 1,...,10] [--folds 5]
        [--config configs/<dataset>.yaml] [--shards DIR] [--output runs/tune_<dataset>] [key=value ...]
    python tune/search_noise.py --dataset digits_lt --fit [--fit-boot 200] [--folds 5] ...

One trial = (alpha, beta, fold k): engine.train on the other folds, evaluated on fold k. Shards without
a `test` part (fold-only datasets) get nested CV: per outer fold, the same grid on the other folds
only. key=value overrides go to every trial's training config. Writes cv_results.csv, summary.md,
heatmap.png, best.yaml and protocol.json into --output (docs/tune.md).

--fit: no grid. Per fold k, the prior network alone trained on the other folds; eq. 7 fitted to its
per-class validation losses; ADPM trained at that fitted law (eq. 14) and evaluated on fold k. Writes
noise_fit.json, noise_fit.png, cv_results.csv, summary.md and protocol.json (docs/tune.md, "Fitting
the noise law instead of searching it").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import (add_runner_arguments, cluster_options, early_stopping, parse_with_overrides, resolve_config,
                     run_command)


def build_parser() -> argparse.ArgumentParser:
    from ..grid import PAPER_ALPHAS, PAPER_BETAS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("what to search")
    g.add_argument("--dataset", required=True, help="digits_lt, pad_ufes, ham10000, scin, hyper_kvasir, imagefolder")
    g.add_argument("--config", help="training YAML (default: configs/<dataset>.yaml)")
    g.add_argument("--shards", help="fold shards from `python -m adpm_dist.data.prepare ... --folds N` "
                                    "(default: prepared once under OUTPUT/shards)")
    g.add_argument("--root", help="dataset files in their official layout, to prepare OUTPUT/shards from "
                                  "(not for digits_lt, which is embedded)")
    g.add_argument("--alphas", nargs="+", help=f"e.g. 0,1/6,1/4 (default: the paper's, {','.join(PAPER_ALPHAS)})")
    g.add_argument("--betas", nargs="+", help="e.g. 1,5,10 (default: 1..10)")
    g.add_argument("--fit", action="store_true", help="fit the noise law (eq. 7) per fold instead of searching "
                                                      "alpha and beta: 2 trials per fold")
    g.add_argument("--fit-boot", type=int, default=200, help="--fit: bootstrap replicates of each fold's fit (default 200)")
    g.add_argument("--folds", type=int, help="CV folds (default: those of --shards, else 5)")
    g.add_argument("--output", help="experiment directory (default: runs/tune_<dataset>)")
    g.add_argument("--resume", action="store_true", help="continue a search: finished trials are not re-run")
    g.add_argument("--consolidate-only", action="store_true", help="only (re)write the tables of --output")
    g.add_argument("--keep-checkpoints", action="store_true",
                   help="keep a finished trial's resume checkpoints (by default they are deleted once the trial has "
                        "finished: best.pt, metrics and predictions stay; docs/tune.md, 'Disk')")
    g.add_argument("overrides", nargs="*", help="dotted key=value training overrides, e.g. train.epochs=2")
    add_runner_arguments(p)
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parse_with_overrides(parser, argv)
    if args.fit and (args.alphas or args.betas or args.early_stop):
        parser.error("--fit fits alpha and beta per fold: --alphas, --betas and --early-stop do not apply")
    if args.fit_boot < 0:
        parser.error(f"--fit-boot must be >= 0, got {args.fit_boot}")
    from ..grid import PAPER_ALPHAS, PAPER_BETAS

    args.alphas, args.betas = args.alphas or list(PAPER_ALPHAS), args.betas or list(PAPER_BETAS)
    return args


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, parse_args, run, "tune/search_noise.py")


def run(args: argparse.Namespace) -> int:
    from ...extras import MissingExtra, require

    try:
        require("ray", "tune/search_noise.py (Ray Tune trials)")
    except MissingExtra as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from ...config import ConfigError, load_config
    from ..evaluator import consolidate
    from ..grid import GridSpec, check_overrides, parse_values, plan_search
    from ..price import show_price
    from ..search import resources_and_shards, run_search
    from ..release import release_finished

    output = Path(args.output or f"runs/tune_{args.dataset}").resolve()
    if args.fit and not args.consolidate_only:
        from ..fit_run import main_fit

        try:
            config = resolve_config(args.config, args.dataset)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return main_fit(args, output, config)
    if args.consolidate_only:
        try:
            report = consolidate(output)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return show(report, output) or (1 if report["partial"] else 0)

    try:
        config = resolve_config(args.config, args.dataset)
        check_overrides(args.overrides)
        base = load_config(config, args.overrides)  # fail on bad keys before preparing data or starting Ray
        spec = GridSpec(dataset=args.dataset, config=str(config), output=str(output),
                        alphas=parse_values(args.alphas, "--alphas"), betas=parse_values(args.betas, "--betas"),
                        folds=args.folds, shards=args.shards, overrides=args.overrides)
        resources, shards, folds = resources_and_shards(args, output, base)
        search = plan_search(spec, shards, folds, resume=args.resume)
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    print(f"search: {len(search.trials)} trials ({len(spec.alphas)} alphas x {len(spec.betas)} betas x {folds} folds"
          f"{f', nested CV (no test part)' if search.protocol == 'nested' else ''}"
          f"{', alpha=0 trained once for all betas' if 0.0 in spec.alphas and len(spec.betas) > 1 else ''}) "
          f"-> {output}", flush=True)
    show_price(search, resources, sys.stdout, calibrate=args.calibrate)
    if args.dry_run:
        return 0
    try:
        run_search(search, resources, cluster_options(args), early_stopping(args, base),
                   progress_interval=args.progress_interval)
        if not args.keep_checkpoints:
            release_finished(search, search.todo)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = consolidate(output)
    failed = sorted({r["source_trial"] for r in report["missing"] if r["status"] != "early_stopped"})
    if failed:
        print(f"{len(failed)} trial(s) without an evaluation (failed after retries, or interrupted): "
              f"{', '.join(failed)} (see trials/<id>/train.log); --resume runs them again", file=sys.stderr)
    return show(report, output) or (1 if failed else 0)


def show(report: dict, output: Path) -> int:
    from ..cells import pm

    if "fits" in report:  # a --fit search
        from ..fit_run import show_fit

        show_fit(report)
        return warn_partial(report)
    best, estimate = report["best"], report["estimate"]
    kind = "cross-validated selection table, optimistic" if estimate is not None else "rows alpha, columns beta"
    print(f"\nmacro-F1, mean ± std over folds ({kind}):\n{report['table']}")
    if best is not None:
        print(f"best: alpha={best.alpha_label} beta={best.beta_label} (selected on the mean over the CV folds' "
              f"evaluation parts{'' if report['complete'] else '; incomplete'})")
    if estimate is not None:
        what = "PARTIAL, do not publish" if report["partial"] else "publish this"
        print(f"nested CV estimate ({what}): macro-F1 {pm(estimate.mean('macro_f1'), estimate.std('macro_f1'))} "
              f"over {len(estimate.folds)}/{len(report['outer_folds'])} outer folds")
    if report["missing"]:
        print(f"{len(report['missing'])} grid cell(s) without results (listed in summary.md)")
    print("wrote " + ", ".join(str(p) for p in report["written"]))
    return warn_partial(report)


def warn_partial(report: dict) -> int:
    """1 (and a loud line on stderr) when the figure to publish is not the full estimate."""
    if not report.get("partial"):
        return 0
    print(f"PARTIAL ESTIMATE, not a figure to publish: {'; '.join(report['partial'])}. Run the missing trials "
          f"(--resume) and consolidate again.", file=sys.stderr)
    return 1


