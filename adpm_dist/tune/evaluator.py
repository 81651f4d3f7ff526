"""Which evaluator an experiment directory gets: the one its search.json names (``mode``).

    grid   consolidate.py   (alpha, beta) x folds: Table 2, heatmap, best.yaml
    fit    fit_summary.py   the noise law fitted per fold
    study  study/report.py  candidates x folds x seeds: study.md, leaderboard, recipe.yaml

Each evaluator returns a report dict with ``written`` (the files) and ``partial`` (why the figure to
publish is not the full estimate; empty when it is). Imports only downwards: no evaluator imports another.
"""
from __future__ import annotations

from pathlib import Path

from .experiment import load_search


def consolidate(out: str | Path) -> dict:
    search = load_search(out)
    mode = search.get("mode", "grid")
    if mode == "fit":
        from .fit_summary import consolidate_fit

        return consolidate_fit(out)
    if mode == "study":
        from .study.report import consolidate_study

        return consolidate_study(out)
    from .consolidate import consolidate as consolidate_grid

    return consolidate_grid(out)


def reported_runs(out: str | Path) -> tuple[list[Path], str]:
    """The trial run directories behind the one configuration this experiment reports, and which it is
    (for `python -m adpm_dist.report compare EXPERIMENT_DIR`: never the inner trials of nested CV, never
    every grid point pooled). Reads only; writes nothing."""
    out = Path(out).resolve()
    search = load_search(out)
    mode = search.get("mode", "grid")
    from .experiment import trial_dir

    if mode == "fit":
        from .fit_plan import FITTED, FitTrial

        runs = [trial_dir(out, FitTrial(FITTED, k)) for k in range(search["folds"])]
        return [r for r in runs if (r / "metrics.json").is_file()], "the fitted-law runs, one per fold"
    if mode == "study":
        from .study.compare import difference, leader, recommend
        from .study.results import class_names_of, estimate, read_results

        results = read_results(out, search)
        names = class_names_of(results)
        estimates = [estimate(out, results, search, c, names) for c in search["candidates"]]
        lead = leader(estimates)
        rec = recommend(estimates, lead, {e.name: difference(e, lead) for e in estimates}) if lead else None
        if rec is None:
            return [], "no candidate evaluated"
        from .study.plan import StudyTrial

        point = {k: s.point for k, s in rec.selections.items()}
        runs = [trial_dir(out, StudyTrial(rec.name, point.get(k, point[None]), s, k)) for k, s in sorted(rec.components)]
        return runs, f"the study's recommendation {rec.name}, its estimate's (fold, seed) runs"
    from .consolidate import choose_best, collect, nested_folds
    from .grid import Trial, shared_source
    from .protocol import NESTED

    if search.get("protocol") == NESTED:
        outer, _ = nested_folds(out, search)
        runs = [trial_dir(out, o.source) for o in outer if o.metrics]
        picks = ", ".join(f"fold{o.fold}: alpha={o.choice.alpha_label} beta={o.choice.beta_label}"
                          for o in outer if o.metrics)
        return runs, f"the nested CV estimate's outer-fold runs ({picks})"
    cells, _ = collect(out, search)
    best, _ = choose_best(cells, search["folds"])
    if best is None:
        return [], "no configuration evaluated"
    betas = [b["value"] for b in search["betas"]]
    runs = [trial_dir(out, shared_source(Trial(best.alpha, best.beta, k), betas)) for k in sorted(best.folds)]
    return runs, (f"the CV's best alpha={best.alpha_label} beta={best.beta_label} over {len(runs)} folds "
                  "(optimistic: chosen on these folds)")
