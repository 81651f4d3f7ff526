"""The study's arithmetic, as pure functions with closed-form tests (tests/test_study_stats.py).

- ``pooled_scores``: out-of-fold predictions pooled over the folds *before* the metric, as scikit-learn's
  ``cross_val_predict`` scores them: a rare class with one image per fold counts once in one macro-F1
  instead of deciding (or vanishing from) every fold's own.
- ``unseen_classes``: the classes a set of evaluation predictions holds no image of (their F1 is 0 by
  definition, not a measurement).
- ``class_groups``: head / medium / tail thirds of the classes by training count.
- ``paired_differences`` + ``bootstrap_interval``: the per-(fold, seed) difference of two candidates and a
  percentile interval of its mean, resampling the (fold, seed) pairs.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ...evaluate import classification_metrics

Pair = tuple[int, int]  # (fold, seed)


def pooled_scores(labels: Sequence[str], predictions: Sequence[str], class_names: Sequence[str]) -> dict:
    """macro-F1, balanced accuracy, ... of predictions pooled over folds (names in, metrics.json's keys out).
    Every class of `class_names` enters the macro average, present or not (zero_division=0)."""
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({v for v in (*labels, *predictions) if v not in index})
    if unknown:
        raise ValueError(f"predictions name classes {unknown} that are not among {list(class_names)}")
    return classification_metrics([index[v] for v in labels], [index[v] for v in predictions], list(class_names))


def unseen_classes(labels: Iterable[str], class_names: Sequence[str]) -> list[str]:
    seen = set(labels)
    return [c for c in class_names if c not in seen]


def class_groups(train_counts: Mapping[str, float]) -> dict[str, list[str]]:
    """Classes sorted by training count (most first), cut in thirds; the head takes the remainder
    (10 classes: 4 / 3 / 3; 3 classes: 1 / 1 / 1). Ties keep the given order."""
    names = sorted(train_counts, key=lambda c: -train_counts[c])
    third = len(names) // 3
    head = len(names) - 2 * third
    return {"head": names[:head], "medium": names[head:head + third], "tail": names[head + third:]}


def group_f1(per_class: Mapping[str, Mapping[str, float]], groups: Mapping[str, list[str]]) -> dict[str, float]:
    """Mean F1 of each group's classes (NaN for an empty group)."""
    return {g: (float(np.mean([per_class[c]["f1"] for c in names])) if names else float("nan"))
            for g, names in groups.items()}


def paired_differences(a: Mapping[Pair, float], b: Mapping[Pair, float]) -> dict[Pair, float]:
    """a - b on every (fold, seed) both have: the same fold and seed is the same data split and init."""
    return {k: a[k] - b[k] for k in sorted(set(a) & set(b))}


def bootstrap_interval(values: Sequence[float], level: float = 0.95, n_boot: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of `values` over `n_boot` resamples with replacement (seeded:
    the same inputs give the same interval). One value: (v, v); none: (nan, nan)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1 or np.all(x == x[0]):
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(lo), float(hi)


def covers_zero(interval: tuple[float, float]) -> bool:
    lo, hi = interval
    return bool(lo <= 0 <= hi)
