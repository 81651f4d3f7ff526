"""`tune/search_noise.py --fit`: both phases on one Ray cluster, the fit between them, then the tables.

The CLI parses; this module plans (fit_plan.py), runs (search.run_search), fits (fit_law.py) and
consolidates (fit_summary.py). Everything that can fail on bad input fails before Ray starts.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..config import ConfigError, load_config
from .experiment import SearchSpec
from .fit_law import FIT_PLOT, add_cost, fit_folds, fold_settings, write_fit_plot, write_noise_fit
from .fit_plan import FITTED, PRIOR, check_fit_overrides, plan_fit
from .search import ClusterOptions, Resources, cluster_from_args, ray_cluster, resources_and_shards, run_search


def main_fit(args, output: Path, config: Path) -> int:
    """Both phases, the fit and the tables; 0 when every fold was evaluated, 1 if some were not, 2 on bad input."""
    try:
        spec, resources, first = plan_first(args, output, config)
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cluster = cluster_from_args(args)
    print(f"fit: {2 * first.folds} trials ({first.folds} folds x (prior network, then ADPM at the fitted law)) "
          f"-> {output}", flush=True)
    from .price import show_price

    show_price(first, resources, sys.stdout, calibrate=args.calibrate)
    print("  (phase 1 only: phase 2 trains ADPM once per fold at the fitted law, priced once phase 1 is done)", flush=True)
    if args.dry_run:
        return 0
    try:
        with ray_cluster(cluster, resources, first.folds):
            run_phase(first, resources, cluster, args)
            search = first.manifest()
            fits = fit_folds(first.out, first.folds, args.fit_boot)
            write_noise_fit(first.out, search, fits)
            write_fit_plot(first.out / FIT_PLOT, fits)
            report_fits(fits)
            second = plan_fit(spec, first.shards, first.folds, args.resume, FITTED, fold_settings(fits), args.fit_boot)
            run_phase(second, resources, cluster, args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .fit_summary import consolidate_fit

    report = consolidate_fit(output, args.fit_boot)
    failed = [r["source_trial"] for r in report["missing"]]
    if failed:
        print(f"{len(failed)} fold(s) without an evaluation: {', '.join(failed)} (see trials/<id>/train.log "
              f"and noise_fit.json); --resume runs them again", file=sys.stderr)
    return show_fit(report) or (1 if failed else 0)


def plan_first(args, output: Path, config: Path):
    """(spec, resources, phase-1 search) from the parsed arguments; ValueError & co. on bad input."""
    check_fit_overrides(args.overrides)
    base = load_config(config, args.overrides)  # fail on bad keys before preparing data or starting Ray
    spec = SearchSpec(dataset=args.dataset, config=str(config), output=str(output),
                      folds=args.folds, shards=args.shards, overrides=args.overrides)
    resources, shards, folds = resources_and_shards(args, output, base)
    return spec, resources, plan_fit(spec, shards, folds, args.resume, PRIOR, n_boot=args.fit_boot)


def run_phase(search, resources: Resources, cluster: ClusterOptions, args) -> None:
    """One phase on the held cluster; its wall time and trial counts go to fit_cost.json."""
    name = {PRIOR: "phase 1: prior network per fold (fit data)", FITTED: "phase 2: ADPM at each fold's fitted law"}
    print(f"\n{name[search.phase]}: {len(search.todo)} of {len(search.trials)} trial(s) to run", flush=True)
    start = time.monotonic()
    run_search(search, resources, cluster, None, progress_interval=args.progress_interval, connected=True)
    add_cost(search.out, search.phase, len(search.trials), len(search.todo), time.monotonic() - start)


def report_fits(fits: dict[int, dict]) -> None:
    for k, f in sorted(fits.items()):
        if "error" in f:
            print(f"fold {k}: no fit: {f['error']}", flush=True)
            continue
        iv = f["intervals"]
        ci = "" if not iv else (f" ({100 * f['level']:.0f}% bootstrap: alpha {iv['alpha'][0]:.3g}..{iv['alpha'][1]:.3g},"
                                f" beta {iv['beta'][0]:.3g}..{iv['beta'][1]:.3g}, c {iv['c'][0]:.3g}..{iv['c'][1]:.3g})")
        print(f"fold {k}: alpha {f['alpha']:.4g}, beta {f['beta']:.4g}, c {f['c']:.4g}{ci}; R^2 {f['r2']:.3f} -> "
              f"noise.formula={f['eq14']['noise.formula']} noise.alpha={f['eq14']['noise.alpha']:.4g} "
              f"noise.beta={f['eq14']['noise.beta']:.4g}", flush=True)


def show_fit(report: dict) -> int:
    from .cells import pm

    est = report["estimate"]
    print(f"\nmacro-F1 at the fitted noise law, mean ± std over {len(est.folds)} folds: "
          f"{pm(est.mean('macro_f1'), est.std('macro_f1'))} (each fold's law fitted without that fold)")
    for phase, c in sorted(report["cost"].items()):
        print(f"cost, {phase}: {c['trials']} trial(s), {c['wall_s']:.0f} s wall time")
    print("wrote " + ", ".join(str(p) for p in report["written"]))
    return 0
