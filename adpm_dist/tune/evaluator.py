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
