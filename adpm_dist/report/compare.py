"""Comparison tables in the paper's shapes, from finished runs (metrics.json only).

Headline (Tables 4, 8, 9): one row per method, accuracy / F1 / precision / recall as mean ± std
over its runs (folds). Per class (Tables 5, 7): per-class accuracy (= recall, docs/algorithm.md, "Metrics") and
F1 of every method side by side, classes head to tail by training count, plus head / medium / tail
thirds. Every run of a diffusion method also contributes its prior network alone as a "prior
network" row (a baseline has no prior: its metrics.json's "prior" block is the method itself).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..evaluate import frequency_thirds, has_prior
from .run_data import load_metrics
from .tables import markdown_table, mean_std

HEADLINE = (("accuracy", "Accuracy"), ("macro_f1", "F1-score"), ("macro_precision", "Precision"),
            ("macro_recall", "Recall"))


@dataclass
class Method:
    label: str
    runs: list[Path] = field(default_factory=list)
    metrics: list[dict] = field(default_factory=list)  # one metrics dict per run (the method's own, or its prior)
    notes: list[str] = field(default_factory=list)     # which runs of a tune experiment were taken, and why


def experiment_runs(path: str | Path) -> tuple[list[Path], str | None]:
    """(runs, which): a tune experiment (search.json) gives the runs of the one configuration its protocol
    reports (tune/evaluator.py: not its inner nested trials, not every grid point); else find_runs."""
    path = Path(path)
    if (path / "search.json").is_file():
        from ..tune.evaluator import reported_runs

        runs, which = reported_runs(path)
        if not runs:
            raise FileNotFoundError(f"{path}: {which}: no finished run to compare")
        return runs, f"{path}: {which}"
    return find_runs(path), None


def find_runs(path: str | Path) -> list[Path]:
    """A run directory itself, or every run directory (holding metrics.json) below an experiment."""
    path = Path(path)
    if (path / "metrics.json").is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run or experiment directory")
    runs = sorted(p.parent for p in path.rglob("metrics.json"))
    if not runs:
        raise FileNotFoundError(f"{path}: no metrics.json below it (not a finished run or experiment)")
    return runs


def collect_methods(paths: list[str | Path], labels: list[str] | None = None,
                    include_prior: bool = True) -> list[Method]:
    """One Method per label (label = --label or the directory name), then the prior networks of
    those that have one (diffusion methods).

    Paths given the same label are pooled into one method (e.g. the fold runs of one configuration
    picked out of a larger experiment directory).
    """
    labels = list(labels or [])
    if labels and len(labels) != len(paths):
        raise ValueError(f"got {len(labels)} labels for {len(paths)} runs/experiments; give one --label per path")
    by_label: dict[str, Method] = {}
    for i, path in enumerate(paths):
        label = labels[i] if labels else (Path(path).resolve().name or str(path))
        runs, which = experiment_runs(path)
        method = by_label.setdefault(label, Method(label))
        method.notes += [which] if which else []
        method.runs += runs
        method.metrics += [load_metrics(r) for r in runs]
    methods = list(by_label.values())
    if include_prior:
        with_prior = [m for m in methods if all(has_prior(x) for x in m.metrics)]
        methods += [Method("prior network" if len(methods) == 1 else f"prior network ({m.label})", m.runs,
                           [x["prior"] | {"train_counts": x.get("train_counts"), "eval_part": x.get("eval_part")}
                            for x in m.metrics])
                    for m in with_prior]
    return methods


def scored_on(metrics: list[dict]) -> str:
    """Where a method's runs were scored (metrics.json's eval_part): `test`, `CV folds (3)` (each run
    on its held-out fold), or every part named when they differ; `?` for runs that do not say."""
    parts = sorted({x.get("eval_part") or "?" for x in metrics})
    if parts == ["test"]:
        return "test"
    if all(p.startswith("fold") for p in parts):
        return f"CV folds ({len(parts)})"
    return "mixed: " + ", ".join(parts) if len(parts) > 1 else parts[0]


def headline_table(methods: list[Method]) -> str:
    """One row per method; `scored on` keeps a CV figure from passing for a test figure beside it."""
    rows = [[m.label, str(len(m.metrics)), scored_on(m.metrics)] + [mean_std([x[k] for x in m.metrics]) for k, _ in HEADLINE]
            for m in methods]
    return markdown_table(["Method", "runs", "scored on"] + [h for _, h in HEADLINE], rows)


def class_order(methods: list[Method]) -> tuple[list[str], np.ndarray]:
    """Class names head to tail by mean training count over all runs (evaluation support if absent)."""
    names = list(methods[0].metrics[0]["per_class"])
    totals, seen = np.zeros(len(names)), 0
    for m in methods:
        for x in m.metrics:
            counts = x.get("train_counts") or {c: x["per_class"][c]["support"] for c in names}
            totals += np.array([counts.get(c, 0) for c in names], dtype=float)
            seen += 1
    mean = totals / max(seen, 1)
    order = np.argsort(-mean, kind="stable")
    return [names[i] for i in order], mean[order]


def thirds(n: int) -> list[tuple[str, range]]:
    """Head / medium / tail thirds of n classes sorted head first (head gets the remainder first)."""
    groups = frequency_thirds(range(n, 0, -1))  # n classes already sorted head first
    return [(name, range(idx[0], idx[-1] + 1)) for name, idx in groups.items() if idx]


def per_class_table(methods: list[Method]) -> str:
    """Per-class accuracy (recall) and F1 per method, mean ± std over runs, then group means."""
    names, counts = class_order(methods)
    for m in methods:
        for run, x in zip(m.runs, m.metrics):
            if set(x["per_class"]) != set(names):
                raise ValueError(f"{run}: classes {sorted(x['per_class'])} differ from {sorted(names)} "
                                 f"({methods[0].runs[0]}); per-class tables need the same classes")
    header = ["Category", "train n"] + [f"{m.label} {h}" for m in methods for h in ("Accuracy", "F1-score")]
    rows = []
    for c, n in zip(names, counts):
        row = [c, f"{n:.0f}"]
        for m in methods:
            row += [mean_std([x["per_class"][c]["recall"] for x in m.metrics]),
                    mean_std([x["per_class"][c]["f1"] for x in m.metrics])]
        rows.append(row)
    for group, idx in thirds(len(names)):
        members = [names[i] for i in idx]
        row = [f"**{group}** ({len(members)} classes)", f"{np.mean([counts[i] for i in idx]):.0f}"]
        for m in methods:  # mean over the group's classes per run, then mean ± std over runs
            row += [mean_std([np.mean([x["per_class"][c]["recall"] for c in members]) for x in m.metrics]),
                    mean_std([np.mean([x["per_class"][c]["f1"] for c in members]) for x in m.metrics])]
        rows.append(row)
    return markdown_table(header, rows)


def comparison_markdown(methods: list[Method]) -> str:
    lines = ["# Comparison", "", "Mean ± std (sample std, ddof 1) over each method's runs; a single run has no std. "
             "`scored on`: the part each method's runs were scored on, `test` (the held-out test part) or "
             "`CV folds (K)` (each run on its own held-out fold): the two are not the same figure.", "",
             "## Overall (shape of the paper's Tables 4, 8, 9)", "", headline_table(methods), "",
             "## Per class (shape of the paper's Tables 5, 7)", "",
             "Accuracy of a class = its recall. Classes head to tail by mean training count; the group rows "
             "average the classes of each third.", "", per_class_table(methods), "", "## Runs", ""]
    for m in methods:
        if not m.label.startswith("prior network"):
            lines.append(f"- {m.label}: " + "".join(f"{n}; " for n in m.notes) + ", ".join(f"`{r}`" for r in m.runs))
    lines.append("")
    return "\n".join(lines)


def compare(paths: list[str | Path], labels: list[str] | None = None, out: str | Path | None = None,
            include_prior: bool = True) -> str:
    """Build the comparison markdown for these runs/experiments; write it to ``out`` if given."""
    text = comparison_markdown(collect_methods(paths, labels, include_prior))
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    return text


__all__ = ["compare", "collect_methods", "find_runs", "headline_table", "per_class_table", "thirds"]
