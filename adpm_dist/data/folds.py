"""Stratified, grouped part assignment: K folds and/or a held-out test fraction (seeded, deterministic).

sklearn's StratifiedGroupKFold does the fold job but warns (or fails) when a class has fewer
members than folds, which is normal for the tail classes we care about, and it has no weighted
(7:3) variant; a greedy assignment is a dozen lines and behaves predictably on any size.

Guarantees (tested): a group (patient / lesion / case / video) never spans two parts; every class
is spread as evenly as its groups allow; a class with fewer groups than parts still has every
sample placed, and a `SmallClassWarning` names it.
"""

from __future__ import annotations

import dataclasses
import random
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence

from .records import Record


class SmallClassWarning(UserWarning):
    """A class has fewer groups than parts: some parts get none of it (its samples are still placed)."""


def stratified_group_split(
    labels: Sequence[int], groups: Sequence[str], weights: Sequence[float], seed: int
) -> list[int]:
    """Return a part index in [0, len(weights)) per sample, part k receiving about weights[k] of each class.

    All samples of a group land in the same part. Each group is counted under its most frequent
    label; per class, groups are visited in a seeded random order (largest first) and each goes to
    the part whose count of that class (true labels), divided by its weight, is lowest (ties: fewest
    samples overall relative to weight, then lowest index). Rarest classes are placed first.
    """
    if not weights or any(w <= 0 for w in weights):
        raise ValueError(f"part weights must be positive, got {list(weights)}")
    n_parts = len(weights)
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    # most_common breaks label ties by first occurrence; fine, the input order is deterministic.
    group_label = {g: Counter(labels[i] for i in idx).most_common(1)[0][0] for g, idx in members.items()}

    by_class: dict[int, list[str]] = defaultdict(list)
    for g in sorted(members):
        by_class[group_label[g]].append(g)
    class_size = {c: sum(len(members[g]) for g in gs) for c, gs in by_class.items()}

    rng = random.Random(seed)
    per_class = defaultdict(lambda: [0] * n_parts)
    total = [0] * n_parts
    part_of = [0] * len(labels)
    for c in sorted(by_class, key=lambda c: (class_size[c], c)):
        gs = by_class[c]
        rng.shuffle(gs)
        gs.sort(key=lambda g: -len(members[g]))  # stable: keeps the shuffled order among equals
        for g in gs:
            k = min(range(n_parts), key=lambda f: (per_class[c][f] / weights[f], total[f] / weights[f], f))
            for i in members[g]:
                part_of[i] = k
                per_class[labels[i]][k] += 1  # true labels: a mixed group counts where it really goes
            total[k] += len(members[g])
    return part_of


def stratified_group_folds(labels: Sequence[int], groups: Sequence[str], n_folds: int, seed: int) -> list[int]:
    """K equal folds: `stratified_group_split` with equal weights. Returns a fold index per sample."""
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    return stratified_group_split(labels, groups, [1.0] * n_folds, seed)


def small_classes(records: Sequence[Record], n_parts: int) -> list[tuple[str, int, int]]:
    """(class_name, groups, samples) of each class with fewer groups than `n_parts`."""
    groups: dict[str, set[str]] = defaultdict(set)
    samples: Counter = Counter()
    for r in records:
        groups[r.class_name].add(r.group)
        samples[r.class_name] += 1
    return [(c, len(g), samples[c]) for c, g in sorted(groups.items()) if len(g) < n_parts]


def _warn_small(records: Sequence[Record], n_parts: int, what: str) -> None:
    for name, n_groups, n in small_classes(records, n_parts):
        warnings.warn(f"class {name!r} has {n} sample(s) in {n_groups} group(s), fewer than the {n_parts} "
                      f"{what}: {n_parts - n_groups} of them get no {name!r} sample (all its samples are "
                      "still placed)", SmallClassWarning, stacklevel=3)


def assign_parts(records: Sequence[Record], folds: int, seed: int, test_fraction: float = 0.0) -> list[Record]:
    """Give every record without a fixed part its part.

    test_fraction > 0 first holds out a stratified grouped `test` part of about that fraction
    (HAM10000: 0.3). The remaining free records become `train` (folds=0) or `fold0..fold{folds-1}`.
    """
    if folds < 0:
        raise ValueError(f"folds must be >= 0, got {folds}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    free = [r for r in records if r.part is None]
    part_of: dict[str, str] = {}
    if test_fraction > 0 and free:
        _warn_small(free, 2, "train/test parts")
        side = stratified_group_split([r.label for r in free], [r.group for r in free],
                                      [1.0 - test_fraction, test_fraction], seed)
        part_of.update({r.key: "test" for r, s in zip(free, side) if s == 1})
        free = [r for r, s in zip(free, side) if s == 0]
    if folds > 0 and free:
        _warn_small(free, folds, "folds")
        fold_of = stratified_group_folds([r.label for r in free], [r.group for r in free], folds, seed)
        part_of.update({r.key: f"fold{k}" for r, k in zip(free, fold_of)})
    else:
        part_of.update({r.key: "train" for r in free})
    return [r if r.part is not None else dataclasses.replace(r, part=part_of[r.key]) for r in records]


def part_sort_key(part: str) -> tuple:
    """Order parts as fold0, fold1, ..., fold10, then train, val, test, then anything else."""
    m = re.fullmatch(r"fold(\d+)", part)
    if m:
        return (0, int(m.group(1)), part)
    return ({"train": 1, "val": 2, "test": 3}.get(part, 4), 0, part)


def protocol_name(parts: Sequence[str], folds: int, test_fraction: float = 0.0) -> str:
    """A short human/machine-readable protocol label for the manifest, e.g. `5-fold`, `train:test 70:30`."""
    has_test = "test" in parts
    held_out = f"test {round(100 * test_fraction)}%" if test_fraction > 0 else "fixed-test"
    if folds > 0:
        return f"{folds}-fold" + (f"+{held_out}" if has_test else "")
    if has_test and test_fraction > 0:
        return f"train:test {round(100 * (1 - test_fraction))}:{round(100 * test_fraction)}"
    return "fixed-test" if has_test else "train-only"
