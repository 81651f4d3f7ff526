"""A finished run directory, read back: metrics.json and predictions.csv as arrays.

Layout written by engine.train: config.yaml, metrics.json, predictions.csv (key, label, prediction,
p_<class>...; a diffusion method's run also prior_prediction and prior_p_<class>...; labels and
predictions are class NAMES), checkpoints/best.pt. A baseline run written before the prior columns
were left out still reads: its repeated prior columns are ignored (evaluate.has_prior).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..evaluate import has_prior


@dataclass
class RunData:
    path: Path
    metrics: dict
    class_names: list[str]
    keys: list[str]
    labels: np.ndarray              # (n,) class indices
    predictions: np.ndarray         # (n,) diffusion prediction (argmax y0)
    prior_predictions: np.ndarray | None  # (n,) prior network prediction (diffusion methods only)
    probs: np.ndarray               # (n, K) class probabilities (ADPM: softmax of y0, DiffMIC's read-out)
    prior_probs: np.ndarray | None  # (n, K) prior softmax, when predictions.csv carries prior_p_ columns

    @property
    def has_prior(self) -> bool:
        """A diffusion method's run: its prior network is reported beside it (evaluate.has_prior)."""
        return self.prior_predictions is not None

    @property
    def name(self) -> str:
        return self.path.name

    def train_counts(self) -> list[float]:
        """Per-class training counts in class order (falls back to evaluation support if absent)."""
        counts = self.metrics.get("train_counts") or {}
        per_class = self.metrics["per_class"]
        return [float(counts.get(c, per_class[c]["support"])) for c in self.class_names]


def load_metrics(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (is {run_dir} a finished run directory?)")
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    for key in ("per_class", "prior", "accuracy", "macro_f1"):
        if key not in metrics:
            raise ValueError(f"{path}: missing key {key!r}")
    return metrics


def load_run(run_dir: str | Path) -> RunData:
    """Read metrics.json and predictions.csv; class order = the order of the p_<class> columns."""
    run_dir = Path(run_dir)
    metrics = load_metrics(run_dir)
    path = run_dir / "predictions.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (is {run_dir} a finished run directory?)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        rows = list(reader)
    names = [h[2:] for h in header if h.startswith("p_")]
    if set(names) != set(metrics["per_class"]):
        raise ValueError(f"{path}: class columns {names} do not match metrics.json classes {list(metrics['per_class'])}")
    index = {c: i for i, c in enumerate(names)}

    def ids(column: str) -> np.ndarray:
        try:
            return np.array([index[r[column]] for r in rows], dtype=np.int64)
        except KeyError as e:
            raise ValueError(f"{path}: column {column!r} holds {e} which is not a class name") from None

    probs = np.array([[float(r[f"p_{c}"]) for c in names] for r in rows], dtype=np.float64).reshape(-1, len(names))
    prior, prior_probs = has_prior(metrics) and "prior_prediction" in header, None
    if prior and all(f"prior_p_{c}" in header for c in names):
        prior_probs = np.array([[float(r[f"prior_p_{c}"]) for c in names] for r in rows]).reshape(-1, len(names))
    return RunData(run_dir, metrics, names, [r["key"] for r in rows], ids("label"), ids("prediction"),
                   ids("prior_prediction") if prior else None, probs, prior_probs)
