"""The consolidating evaluator of an experiment directory: the one its kind of study provides.

A kind of study is a module with two functions, registered here by the ``mode`` its search.json records:

    consolidate(out) -> report    write the kind's outputs; the report dict has ``written`` (the files)
                                  and ``partial`` (why the figure to publish is not the full estimate;
                                  empty when it is)
    reported_runs(out, search)    the run directories behind the one configuration the kind reports,
                                  and a line saying which (``python -m adpm_dist.report compare``)

    grid   consolidate.py     (alpha, beta) x folds: Table 2, heatmap, best.yaml (tune/search_noise.py)
    fit    fit_summary.py     the noise law fitted per fold (tune/search_noise.py --fit)
    study  study/report.py    candidates x points x folds x seeds: study.md, leaderboard, recipe.yaml

(A batch of named runs, tune/batch.py, is the benchmarks' kind: its callers read the runs themselves.)
Kinds are imported on use and never import each other.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from .experiment import load_search

KINDS = {"grid": ".consolidate", "fit": ".fit_summary", "study": ".study.report"}
CONSOLIDATE = {"grid": "consolidate", "fit": "consolidate_fit", "study": "consolidate_study"}


def kind_of(search: dict):
    mode = search.get("mode", "grid")
    if mode not in KINDS:
        raise ValueError(f"search.json mode {mode!r} has no evaluator (known: {', '.join(KINDS)})")
    return mode, importlib.import_module(KINDS[mode], __package__)


def consolidate(out: str | Path) -> dict:
    mode, kind = kind_of(load_search(out))
    return getattr(kind, CONSOLIDATE[mode])(out)


def reported_runs(out: str | Path) -> tuple[list[Path], str]:
    """The trial run directories behind the one configuration this experiment reports, and which it is
    (never the inner trials of nested CV, never every grid point pooled). Reads only; writes nothing."""
    out = Path(out).resolve()
    search = load_search(out)
    return kind_of(search)[1].reported_runs(out, search)
