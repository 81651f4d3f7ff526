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

ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    from adpm_dist.tune.grid import PAPER_ALPHAS, PAPER_BETAS

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
    g.add_argument("overrides", nargs="*", help="dotted key=value training overrides, e.g. train.epochs=2")
    r = p.add_argument_group("resources and fault tolerance")
    r.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per training process (default 1)")
    r.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per training process (whole if workers > 1)")
    r.add_argument("--workers-per-trial", type=int, default=1, help="> 1: Ray Train TorchTrainer with W processes")
    r.add_argument("--max-concurrent", type=int, help="trials at once (default: as the resources allow)")
    r.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial (default 2)")
    r.add_argument("--early-stop", action="store_true", help="ASHA on val_macro_f1, per fold")
    r.add_argument("--grace-period", type=int, help="joint epochs (after the prior warm-up) before ASHA may stop a trial (default: train.val_every)")
    r.add_argument("--reduction-factor", type=float, default=3.0, help="ASHA reduction factor (default 3)")
    c = p.add_argument_group("cluster")
    c.add_argument("--address", help="join a running cluster (auto, ray://host:10001); default: RAY_ADDRESS if set "
                                     "(ray job submit), else start a local cluster on 127.0.0.1")
    c.add_argument("--num-cpus", type=float, help="local cluster: logical CPUs (default: enough for the concurrent trials)")
    c.add_argument("--ray-temp-dir", help="local cluster: Ray's temp/log directory (default /tmp/ray)")
    c.add_argument("--dashboard", action="store_true", help="local cluster: start the dashboard on 127.0.0.1")
    c.add_argument("--dashboard-port", type=int, default=8265)
    c.add_argument("--progress-interval", type=float, default=15.0, help="seconds between progress tables")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Like parse_args, but key=value words anywhere are overrides (`--betas 5 train.epochs=1` keeps 5 a beta)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    is_override = [("=" in a and not a.startswith("-")) for a in argv]
    parser = build_parser()
    args = parser.parse_args([a for a, o in zip(argv, is_override) if not o])
    args.overrides = [a for a, o in zip(argv, is_override) if o] + args.overrides  # the rest fails in load_config
    if args.fit and (args.alphas or args.betas or args.early_stop):
        parser.error("--fit fits alpha and beta per fold: --alphas, --betas and --early-stop do not apply")
    if args.fit_boot < 0:
        parser.error(f"--fit-boot must be >= 0, got {args.fit_boot}")
    from adpm_dist.tune.grid import PAPER_ALPHAS, PAPER_BETAS

    args.alphas, args.betas = args.alphas or list(PAPER_ALPHAS), args.betas or list(PAPER_BETAS)
    return args


def resolve_config(path: str | None, dataset: str) -> Path:
    given = Path(path or f"configs/{dataset}.yaml")
    for candidate in (given, ROOT / given):
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"config file not found: {given} (pass --config configs/<something>.yaml)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from adpm_dist.extras import MissingExtra, require

    try:
        require("ray", "tune/search_noise.py (Ray Tune trials)")
    except MissingExtra as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from adpm_dist.config import ConfigError, load_config
    from adpm_dist.tune.evaluator import consolidate
    from adpm_dist.tune.experiment import SearchSpec, check_overrides, plan_search
    from adpm_dist.tune.grid import parse_values
    from adpm_dist.tune.search import ClusterOptions, EarlyStopping, resources_and_shards, run_search

    output = Path(args.output or f"runs/tune_{args.dataset}").resolve()
    if args.fit and not args.consolidate_only:
        from adpm_dist.tune.fit_run import main_fit

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
        spec = SearchSpec(dataset=args.dataset, config=str(config), output=str(output),
                          alphas=parse_values(args.alphas, "--alphas"), betas=parse_values(args.betas, "--betas"),
                          folds=args.folds, shards=args.shards, overrides=args.overrides)
        resources, shards, folds = resources_and_shards(args, output, base)
        search = plan_search(spec, shards, folds, resume=args.resume)
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    early = None
    if args.early_stop:
        grace = args.grace_period or base.train.val_every
        early = EarlyStopping(grace_period=grace, reduction_factor=args.reduction_factor)
    cluster = ClusterOptions(address=args.address, num_cpus=args.num_cpus, temp_dir=args.ray_temp_dir,
                             dashboard=args.dashboard, dashboard_port=args.dashboard_port)
    print(f"search: {len(search.trials)} trials ({len(spec.alphas)} alphas x {len(spec.betas)} betas x {folds} folds"
          f"{f', nested CV (no test part)' if search.protocol == 'nested' else ''}"
          f"{', alpha=0 trained once for all betas' if 0.0 in spec.alphas and len(spec.betas) > 1 else ''}) "
          f"-> {output}", flush=True)
    try:
        run_search(search, resources, cluster, early, progress_interval=args.progress_interval)
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
    from adpm_dist.tune.cells import pm

    if "fits" in report:  # a --fit search
        from adpm_dist.tune.fit_run import show_fit

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


if __name__ == "__main__":
    sys.exit(main())
