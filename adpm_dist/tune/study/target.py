"""The score a user will see, estimated from out-of-fold predictions, with an interval that covers it.
Pure functions over arrays (tests/test_study_target.py checks them against closed forms and simulation).

**Target prior** (docs/tune.md, "The estimate"). Recall does not depend on how often a class occurs;
precision does: on a long-tailed fold, head images mistaken for a tail class swamp that class's
precision, while a balanced test set has few head images to mistake. With the pooled out-of-fold
confusion counts ``C[i, j]`` (true i, predicted j; ``n_i`` images of class i) and a target class mix
``pi`` (sum 1), each row is rescaled to its share of the target:

    C'[i, j] = pi_i C[i, j] / n_i,     P_j = C'[j, j] / sum_i C'[i, j],     R_j = C[j, j] / n_j,
    F1_j = 2 P_j R_j / (P_j + R_j)  (0 when both are 0),     macro-F1 = mean_j F1_j.

In expectation this is the macro-F1 on a test set of mix ``pi`` whose images the models treat as they
treated the out-of-fold ones. Balanced accuracy is the mean recall (prior-free). A class with no
out-of-fold image has no recall to rescale: it is left out of the means and named, never counted 0.

**Jeffreys' half image** (docs/tune.md, "The interval"). A tail class with 2 out-of-fold images, both
right, does not have a recall of 1 that any resampling of those 2 images can question. Each class with
images gets two pseudo-images, half an image right and half an image wrong (the wrong half spread
evenly over the other classes' columns): its recall's posterior under Jeffreys' prior Beta(1/2, 1/2),
whose intervals Brown, Cai & DasGupta (2001) recommend for small counts. The estimate is that
posterior's mean (2 of 2 right reads 2.5 / 3 = 0.83); a class of hundreds of images barely moves.

**Paired two-level bootstrap.** Each replicate (1) draws, per fold, one of its seeds' runs (training
runs vary), then (2) reweights the pooled images *within each class* with the Bayesian bootstrap's
Exp(1) weights (Rubin 1981), and each class's two pseudo-images with Gamma(1/2) weights, so a class
with x of n right has a recall drawn from exactly Beta(x + 1/2, n - x + 1/2) (finite evaluation images:
a tail class of 3 images moves its F1 by a third per image), and scores every candidate on the same
draw, so differences between candidates are paired: shared images, pseudo-images and runs cancel, and
two candidates that predict identically have a difference of exactly 0.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

TARGETS = ("balanced", "train")


def target_prior(kind: str | Mapping[str, float], class_names: Sequence[str],
                 train_counts: Mapping[str, float] | None = None) -> np.ndarray:
    """``balanced`` (1/K each), ``train`` (the training counts' mix) or a mapping class -> weight (normalised;
    every class must be named, weights >= 0, not all 0). ValueError naming the class or key otherwise."""
    k = len(class_names)
    if isinstance(kind, str):
        if kind == "balanced":
            return np.full(k, 1.0 / k)
        if kind == "train":
            if not train_counts:
                raise ValueError("target prior 'train': no training counts recorded by the trials")
            w = np.array([float(train_counts.get(c, 0.0)) for c in class_names])
        else:
            raise ValueError(f"target prior {kind!r}: expected balanced, train or a YAML file of class weights")
    else:
        missing = [c for c in class_names if c not in kind]
        extra = sorted(set(kind) - set(class_names))
        if missing or extra:
            raise ValueError(f"target prior: classes missing {missing}, unknown {extra} (expected {list(class_names)})")
        w = np.array([float(kind[c]) for c in class_names])
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"target prior: weights must be finite, >= 0 and not all 0, got {w.tolist()}")
    return w / w.sum()


def confusions(labels: np.ndarray, predictions: np.ndarray, k: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Confusion counts C[..., i, j] of integer labels (N,) and predictions (..., N), optionally weighted
    (..., N): one matrix per leading index (a bootstrap replicate), as one bincount."""
    p = np.atleast_2d(predictions)
    b, n = p.shape
    w = np.ones((b, n)) if weights is None else np.broadcast_to(np.atleast_2d(weights), (b, n))
    index = (np.arange(b)[:, None] * k + labels[None, :]) * k + p
    c = np.bincount(index.ravel(), weights=w.ravel(), minlength=b * k * k).reshape(b, k, k)
    return c if np.ndim(predictions) > 1 else c[0]


def prior_scores(c: np.ndarray, prior: np.ndarray) -> dict[str, np.ndarray]:
    """macro-F1 and balanced accuracy under ``prior`` of confusion counts (..., K, K), and the per-class F1
    (..., K), NaN for classes without images (or with target weight 0), which the means leave out."""
    n = c.sum(axis=-1)                                   # images per true class
    used = (n > 0) & (prior > 0)
    diag = np.diagonal(c, axis1=-2, axis2=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(n > 0, diag / np.where(n > 0, n, 1), np.nan)
        rows = np.where((n > 0)[..., None], c * (prior / np.where(n > 0, n, 1))[..., None], 0.0)
        predicted = rows.sum(axis=-2)                    # reweighted column sums
        precision = np.where(predicted > 0, np.diagonal(rows, axis1=-2, axis2=-1) / np.where(predicted > 0, predicted, 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    f1 = np.where(used, f1, np.nan)
    recall = np.where(used, recall, np.nan)
    count = used.sum(axis=-1)
    return {"macro_f1": np.nansum(f1, axis=-1) / np.maximum(count, 1),
            "balanced_accuracy": np.nansum(recall, axis=-1) / np.maximum(count, 1), "per_class_f1": f1}


JEFFREYS = 0.5    # weight of each class's right and of its wrong pseudo-image: Beta(1/2, 1/2) on recall


def with_pseudo_images(c: np.ndarray, right: np.ndarray | float = JEFFREYS,
                       wrong: np.ndarray | float = JEFFREYS) -> np.ndarray:
    """Confusion counts (..., K, K) plus, in each row with images, ``right`` on the diagonal and ``wrong``
    spread evenly over the row's other K - 1 cells (scalars, or (..., K) per replicate and class). A row
    without images stays empty: that class is still left out, not invented."""
    k = c.shape[-1]
    has = (c.sum(axis=-1) > 0)[..., None]
    eye = np.eye(k)
    right = np.asarray(right, dtype=float)[..., None]
    wrong = np.asarray(wrong, dtype=float)[..., None]
    return c + np.where(has, right * eye + wrong * (1 - eye) / max(k - 1, 1), 0.0)


def estimate_scores(runs: Sequence[np.ndarray], labels: np.ndarray, k: int, prior: np.ndarray) -> dict[str, np.ndarray]:
    """The estimate: ``prior_scores`` of the runs' confusion counts averaged over runs (each seed's
    out-of-fold predictions, (N,) each), with Jeffreys' half image right and half wrong per class."""
    c = sum(confusions(labels, p, k) for p in runs) / len(runs)
    return prior_scores(with_pseudo_images(c), prior)


def class_posterior_weights(labels: np.ndarray, k: int, n_boot: int,
                            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image weights (n_boot, N), right and wrong pseudo-image weights (n_boot, K) each): Exp(1) per
    image, Gamma(1/2) per pseudo-image. By Gamma additivity a class with x of n images right gets
    right mass Gamma(x + 1/2) and wrong mass Gamma(n - x + 1/2), a recall of Beta(x + 1/2, n - x + 1/2):
    Jeffreys' posterior. Rows are normalised by their totals, so the weights' scale does not matter."""
    images = rng.exponential(1.0, size=(n_boot, labels.size))
    right, wrong = rng.gamma(JEFFREYS, 1.0, size=(2, n_boot, k))
    return images, right, wrong


def paired_bootstrap(predictions: Mapping[str, np.ndarray], labels: np.ndarray, folds: np.ndarray, k: int,
                     prior: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """Per candidate, ``n_boot`` replicate macro-F1 values under ``prior``. ``predictions[name]`` is (S, N):
    seed s's out-of-fold prediction of image n (the same S seeds, N images and folds for every candidate).
    Replicate b draws one seed per fold and reweights images and pseudo-images within classes; all
    candidates share both."""
    rng = np.random.default_rng(seed)
    fold_ids, fold_of = np.unique(folds, return_inverse=True)
    seeds = next(iter(predictions.values())).shape[0] if predictions else 1
    pick = rng.integers(0, seeds, size=(n_boot, fold_ids.size))[:, fold_of]    # (B, N): seed per image's fold
    weights, right, wrong = class_posterior_weights(labels, k, n_boot, rng)
    cols = np.arange(labels.size)[None, :]
    return {name: prior_scores(with_pseudo_images(confusions(labels, p[pick, cols], k, weights), right, wrong),
                               prior)["macro_f1"]
            for name, p in predictions.items()}


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    tail = (1 - level) / 2
    lo, hi = np.quantile(values, [tail, 1 - tail])
    return float(lo), float(hi)


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion (a calibration benchmark's coverage over its draws)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)
