"""The validation carve-out: model selection data taken from the training parts, never the eval part."""
from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable


def carve_validation(samples: Iterable[tuple[str, int, str]], fraction: float, seed: int) -> frozenset[str]:
    """Keys of a stratified, group-disjoint validation subset of (key, label, group) samples.

    Each class gets about ``fraction`` of its samples (at least one when it has two or more), taken
    as whole groups so a patient never sits on both sides. Seeded and independent of input order.
    """
    samples = sorted(samples)
    if fraction <= 0 or not samples:
        return frozenset()
    by_group: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for key, label, group in samples:
        by_group[group].append((key, label))
    class_sizes = Counter(label for _, label, _ in samples)
    quota = {c: (max(1, round(fraction * n)) if n >= 2 else 0) for c, n in class_sizes.items()}
    groups = sorted(by_group)
    random.Random(seed).shuffle(groups)
    taken: Counter = Counter()
    val: set[str] = set()
    for group in groups:
        members = by_group[group]
        label = Counter(lbl for _, lbl in members).most_common(1)[0][0]
        if taken[label] < quota[label]:
            val.update(key for key, _ in members)
            taken.update(lbl for _, lbl in members)
    return frozenset(val)
