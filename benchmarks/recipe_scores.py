"""A recipe's score on a draw's held-out `test` part, as benchmarks/study_calibration.py reads it: the
balanced macro-F1 of its predictions.csv, how far another test part of that size would move it, and the
interval that adds that spread (a prediction interval for one test part)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def test_predictions(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, predictions, balanced prior) of a recipe's test part, as class indices."""
    import csv

    from adpm_dist.tune.study import target

    names = list(json.loads((run / "metrics.json").read_text())["per_class"])
    with open(run / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    index = {c: i for i, c in enumerate(names)}
    return (np.array([index[r["label"]] for r in rows]), np.array([index[r["prediction"]] for r in rows]),
            target.target_prior("balanced", names))


def test_spread(run: Path, n_boot: int = 1000) -> float:
    """The standard deviation of the recipe's balanced test macro-F1 over class-stratified resamples of the
    test images: how far another test part of this size would move the score the user sees."""
    return score_and_spread(run, n_boot)[1]


def balanced_score(run: Path) -> float:
    """The recipe's test macro-F1 as a balanced test set measures it: score_and_spread's score without the
    bootstrap (a recipe trained again at another seed needs no spread of its own)."""
    return balanced_macro_f1(*test_predictions(run))


def balanced_macro_f1(labels: np.ndarray, predictions: np.ndarray, prior: np.ndarray) -> float:
    """macro-F1 with each test confusion row rescaled to ``prior`` (here 1/K)."""
    from adpm_dist.tune.study import target

    return float(target.prior_scores(target.confusions(labels, predictions, prior.size), prior)["macro_f1"])


def score_and_spread(run: Path, n_boot: int = 1000) -> tuple[float, float]:
    """(the recipe's test macro-F1 as a balanced test set measures it, test_spread), from one read of its
    predictions: its test confusion rows rescaled to 1/K (photo-LT's and shapes-LT's test parts are
    balanced already, digits-LT's is what the draw left)."""
    from adpm_dist.tune.study import target

    labels, predictions, prior = test_predictions(run)
    score = balanced_macro_f1(labels, predictions, prior)
    reps = target.paired_bootstrap({"r": predictions[None, :]}, labels, np.zeros_like(labels), prior.size, prior,
                                   n_boot=n_boot)["r"]
    return score, float(np.std(reps, ddof=1))


def widened(interval: tuple[float, float], centre: float, spread: float, z: float = 1.959964) -> tuple[float, float]:
    """A prediction interval for one test part's score: each side of the study's interval around its centre
    combined (in quadrature) with z x the test part's own spread."""
    lo, hi = interval
    return centre - math.hypot(centre - lo, z * spread), centre + math.hypot(hi - centre, z * spread)
