"""Classification metrics and the run summary table.

Metrics are computed over all de-duplicated predictions at once (ADPM_SPEC 4.15), never averaged
per batch as DiffMIC did.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, precision_recall_fscore_support


def classification_metrics(labels: Sequence[int], predictions: Sequence[int], class_names: Sequence[str]) -> dict:
    """accuracy, macro P/R/F1, balanced accuracy and per-class P/R/F1/support (DESIGN.md 4)."""
    y, p = np.asarray(labels), np.asarray(predictions)
    ids = list(range(len(class_names)))
    prec, rec, f1, support = precision_recall_fscore_support(y, p, labels=ids, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y, p)),
        "macro_f1": float(f1.mean()),
        "macro_precision": float(prec.mean()),
        "macro_recall": float(rec.mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y, p)) if len(y) else 0.0,
        "n_samples": int(len(y)),
        "per_class": {name: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(class_names)},
    }


def format_table(metrics: dict) -> str:
    """Headline metrics for ADPM and the prior alone, then per-class F1, as a plain-text table."""
    rows = [("ADPM (diffusion)", metrics), ("prior network", metrics["prior"])]
    keys = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "balanced_accuracy")
    lines = [f"{'':18}" + "".join(f"{k:>18}" for k in keys)]
    lines += [f"{name:18}" + "".join(f"{m[k]:>18.4f}" for k in keys) for name, m in rows]
    lines.append("")
    lines.append(f"{'class':>10}{'support':>9}{'lambda':>9}{'F1 ADPM':>10}{'F1 prior':>10}")
    levels = metrics.get("noise_levels", {})
    for name, pc in metrics["per_class"].items():
        lines.append(f"{name:>10}{pc['support']:>9}{levels.get(name, float('nan')):>9.3f}{pc['f1']:>10.4f}"
                     f"{metrics['prior']['per_class'][name]['f1']:>10.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m adpm_dist.evaluate show RUN_DIR`: print a run's metrics table."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "show":
        print("usage: python -m adpm_dist.evaluate show RUN_DIR", file=sys.stderr)
        return 2
    path = Path(argv[1]) / "metrics.json"
    if not path.is_file():
        print(f"error: {path} not found (did training finish?)", file=sys.stderr)
        return 1
    metrics = json.loads(path.read_text())
    print(f"{path}: {metrics['n_samples']} samples of part '{metrics.get('eval_part')}'")
    print(format_table(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
