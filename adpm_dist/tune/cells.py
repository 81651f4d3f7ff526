"""The grid's building blocks, shared by every evaluator (grid, --fit, studies): a Cell (one configuration
with the folds that have results), a trial's status, its cv_results.csv row, the per-class table.

No evaluator is imported here, so consolidate.py, fit_summary.py and the study evaluator all read
from this module and never from each other.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..evaluate import format_pm as pm
from ..evaluate import mean_std
from ..files import atomic_write_text
from .grid import Trial
from .protocol import HELD_OUT

HEADLINE = ("macro_f1", "accuracy", "macro_precision", "macro_recall", "balanced_accuracy")
NAMES = {"macro_f1": "macro-F1", "accuracy": "accuracy", "macro_precision": "macro-P", "macro_recall": "macro-R",
         "balanced_accuracy": "balanced acc."}


@dataclass
class Cell:
    """One (alpha, beta) of the grid with the folds that have results."""
    alpha: float
    beta: float
    alpha_label: str
    beta_label: str
    folds: dict[int, dict] = field(default_factory=dict)   # fold -> metrics.json
    status: dict[int, str] = field(default_factory=dict)   # fold -> done / early_stopped / failed / not run

    def values(self, key: str, prior: bool = False) -> np.ndarray:
        values = [(m["prior"] if prior else m).get(key) for _, m in sorted(self.folds.items())]
        return np.array([v for v in values if v is not None], dtype=float)  # older runs lack prior_agreement

    def mean(self, key: str, prior: bool = False) -> float:
        return mean_std(self.values(key, prior))[0]

    def std(self, key: str, prior: bool = False) -> float:
        return mean_std(self.values(key, prior))[1]  # sample std over folds

    def per_class(self, key: str, name: str, prior: bool = False) -> np.ndarray:
        return np.array([(m["prior"] if prior else m)["per_class"][name][key] for _, m in sorted(self.folds.items())])


# Scores a metrics.json holds that are fractions; every number in it must be finite.
SCORES = HEADLINE + ("val_macro_f1", "prior_agreement")
CLASS_SCORES = ("precision", "recall", "f1")


def metrics_problem(metrics) -> str | None:
    """Why a trial's metrics.json cannot be a result (a score outside [0, 1], a non-finite number, a missing
    headline score), or None. Checked on read: one bad file must never move a recommendation silently."""
    if not isinstance(metrics, dict):
        return "not a JSON object"
    for where, block in (("", metrics), ("prior.", metrics.get("prior"))):
        if not isinstance(block, dict):
            return f"{where or 'prior'}: missing"
        for key in SCORES:
            value = block.get(key)
            if value is None and key in HEADLINE:  # result_row reads every headline score, the prior's too
                return f"{where}{key}: missing"
            if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                return f"{where}{key}: {value!r} is not a score in [0, 1]"
        for name, row in (block.get("per_class") or {}).items():
            for key in CLASS_SCORES:
                value = row.get(key)
                if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                    return f"{where}per_class.{name}.{key}: {value!r} is not a score in [0, 1]"
    bad = _non_finite(metrics, "")
    return f"{bad}: not a finite number" if bad else None


def _non_finite(tree, prefix: str) -> str | None:
    if isinstance(tree, float) and not math.isfinite(tree):
        return prefix.rstrip(".") or "value"
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for k, v in items:
        if (bad := _non_finite(v, f"{prefix}{k}.")) is not None:
            return bad
    return None


def load_metrics(path: Path) -> dict:
    """A trial's metrics.json, checked (metrics_problem); ValueError naming the file and the problem."""
    try:
        metrics = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if problem := metrics_problem(metrics):
        raise ValueError(f"{path}: {problem}")
    return metrics


def trial_status(run_dir: Path) -> str:
    """done, early_stopped, failed, not run; a metrics.json that cannot be a result makes the trial
    "failed: <file>: <why>" (listed as a trial without an evaluation, never averaged in)."""
    if (run_dir / "metrics.json").is_file():
        try:
            load_metrics(run_dir / "metrics.json")
        except (OSError, ValueError) as e:
            return f"failed: {e}"
        return "done"
    if (run_dir / "early_stopped.json").is_file():
        return "early_stopped"
    if (run_dir / "attempts.jsonl").is_file():
        return "failed"  # started but never evaluated (failed, or interrupted)
    return "not run"


def protocol_of(search: dict) -> str:
    return search.get("protocol", HELD_OUT)  # searches written before nested CV existed had a test part


def read_metrics(run_dir: Path, status: str) -> dict | None:
    return load_metrics(run_dir / "metrics.json") if status == "done" else None


def result_row(cell: Cell, fold: int, source: Trial, status: str, metrics: dict | None) -> dict:
    row = {"outer": "" if source.outer is None else source.outer,
           "alpha": cell.alpha, "alpha_label": cell.alpha_label, "beta": cell.beta, "beta_label": cell.beta_label,
           "fold": fold, "eval_part": f"fold{fold}", "status": status, "source_trial": source.id}
    if metrics is None:
        return row
    row |= {k: metrics[k] for k in HEADLINE}
    row |= {f"prior_{k}": metrics["prior"][k] for k in HEADLINE}
    row |= {"n_samples": metrics["n_samples"], "best_epoch": metrics.get("best_epoch"),
            "val_macro_f1": metrics.get("val_macro_f1"), "prior_agreement": metrics.get("prior_agreement")}
    row |= {f"f1_{c}": v["f1"] for c, v in metrics["per_class"].items()}
    row |= {f"prior_f1_{c}": v["f1"] for c, v in metrics["prior"]["per_class"].items()}
    return row


@dataclass
class OuterFold:
    """Nested CV, outer fold k: the point the inner CV chose and its one evaluation on fold k."""
    fold: int
    choice: Cell | None          # best cell of the inner CV over the other folds
    inner_complete: bool         # the choice was among points with every inner fold finished
    source: Trial | None         # the CV trial that trained the choice without fold k and scored it on fold k
    status: str
    metrics: dict | None


def nested_estimate(outer_folds: list[OuterFold]) -> Cell:
    """The outer folds' scores as one Cell (mean, std, per class over outer folds); its (alpha, beta) vary."""
    return Cell(math.nan, math.nan, "selected per outer fold", "", {o.fold: o.metrics for o in outer_folds if o.metrics})


def write_csv(path: Path, rows: list[dict]) -> None:
    """Atomically (files.py): a killed evaluator leaves the previous cv_results.csv, never half a new one."""
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    atomic_write_text(path, buf.getvalue())


def per_class_table(best: Cell, baseline: Cell | None, class_names: list[str]) -> list[str]:
    """Like the paper's Tables 5/7: per-class F1 and accuracy (= recall) of the best noise, vs alpha = 0 and the prior."""
    head = "| class | train n | lambda_j | support | F1 | accuracy (recall) |"
    sep = "|---|---:|---:|---:|---:|---:|"
    if baseline is not None and baseline.folds:
        head += " F1 alpha=0 |"
        sep += "---:|"
    head += " F1 prior |"
    sep += "---:|"
    lines = [head, sep]
    for name in class_names:
        train_n = np.mean([m.get("train_counts", {}).get(name, math.nan) for m in best.folds.values()])
        lam = np.mean([m.get("noise_levels", {}).get(name, math.nan) for m in best.folds.values()])
        support = sum(m["per_class"][name]["support"] for m in best.folds.values())
        f1, rec = best.per_class("f1", name), best.per_class("recall", name)
        cols = [name, f"{train_n:.0f}", f"{lam:.3f}", str(support), pm(*mean_std(f1)), pm(*mean_std(rec))]
        if baseline is not None and baseline.folds:
            b = baseline.per_class("f1", name)
            cols.append(pm(*mean_std(b)))
        p = best.per_class("f1", name, prior=True)
        cols.append(pm(*mean_std(p)))
        lines.append("| " + " | ".join(cols) + " |")
    return lines


def class_names_of(cells: list[Cell]) -> list[str]:
    for c in cells:
        for m in c.folds.values():
            return list(m["per_class"])
    return []


def partial_banner(partial: list[str]) -> str:
    if not partial:
        return ""
    return ("> **PARTIAL ESTIMATE: not a figure to publish.** " + "; ".join(partial)
            + ". Run the missing trials (`--resume`) and consolidate again.\n\n")
