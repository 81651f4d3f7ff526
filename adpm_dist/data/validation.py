"""The validation carve-out: model selection data taken from the training parts, never the eval part.

Policy (docs/data.md, "Validation data"): class j gives max(1, round(fraction * n_j)) samples, but
never more than ``max_share`` of its samples (default a fifth) and never its last ``min_train``
(default 2). So a class with fewer than 5 samples keeps all of them for training and has no
validation data: one or two tail images would otherwise decide its validation F1 (0 or 1) and cost
it half its training data. Validation macro-F1 averages over the classes validation has.
"""
from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable


def carve_quota(n: int, *, fraction: float, max_share: float = 0.2, min_train: int = 2) -> int:
    """How many of a class's ``n`` training samples go to validation."""
    if fraction <= 0 or n <= 0:
        return 0
    wanted = max(1, round(fraction * n))
    return max(0, min(wanted, math.floor(max_share * n + 1e-9), n - min_train))


def carve_validation(samples: Iterable[tuple[str, int, str]], fraction: float, seed: int, *,
                     max_share: float = 0.2, min_train: int = 2) -> frozenset[str]:
    """Keys of a stratified, group-disjoint validation subset of (key, label, group) samples.

    Each class gets ``carve_quota`` of its samples, taken as whole groups so a patient never sits on
    both sides. Seeded and independent of input order.
    """
    samples = sorted(samples)
    if fraction <= 0 or not samples:
        return frozenset()
    return take_groups(samples, lambda n: carve_quota(n, fraction=fraction, max_share=max_share, min_train=min_train),
                       random.Random(seed))


def share_out(samples: Iterable[tuple[str, int, str]], share: float, seed: int) -> frozenset[str]:
    """Keys of (key, label, group) training samples a run of ``data.train_share`` leaves unused: each class
    keeps max(1, round(share * n)) of its n samples, taken as whole groups in a seeded order (so a patient
    is wholly in or out), the rest are unused. ``share`` 1 leaves nothing out."""
    samples = sorted(samples)
    if share >= 1 or not samples:
        return frozenset()
    kept = take_groups(samples, lambda n: max(1, round(share * n)), random.Random(f"train_share:{seed}"))
    return frozenset(key for key, _, _ in samples) - kept


def take_groups(samples: list[tuple[str, int, str]], quota: Callable[[int], int], rng: random.Random) -> frozenset[str]:
    """Keys of whole groups of the sorted (key, label, group) ``samples``, visited in ``rng``'s order, each
    taken while its majority class has fewer than ``quota(class size)`` samples taken."""
    by_group: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for key, label, group in samples:
        by_group[group].append((key, label))
    wanted = {c: quota(n) for c, n in Counter(label for _, label, _ in samples).items()}
    groups = sorted(by_group)
    rng.shuffle(groups)
    taken: Counter = Counter()
    keys: set[str] = set()
    for group in groups:
        members = by_group[group]
        label = Counter(lbl for _, lbl in members).most_common(1)[0][0]
        if taken[label] < wanted[label]:
            keys.update(key for key, _ in members)
            taken.update(lbl for _, lbl in members)
    return frozenset(keys)
