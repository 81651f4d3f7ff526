"""Folds: stratified, grouped, seeded; a group never spans two parts; tiny classes warned but placed."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from adpm_dist.data.folds import (SmallClassWarning, assign_parts, protocol_name, stratified_group_folds,
                                  stratified_group_split)
from adpm_dist.data.records import Record


def _dataset(seed: int, n_groups: int = 300):
    """Long-tailed labels, groups of 1-4 samples sharing a label (a patient with several images)."""
    rng = random.Random(seed)
    labels, groups = [], []
    for g in range(n_groups):
        label = min(int(rng.expovariate(0.7)), 5)
        for _ in range(rng.randint(1, 4)):
            labels.append(label if rng.random() > 0.1 else rng.randrange(6))  # some mixed-label groups
            groups.append(f"g{g}")
    return labels, groups


def _parts_of_groups(groups, assignment):
    seen = defaultdict(set)
    for g, k in zip(groups, assignment):
        seen[g].add(k)
    return seen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_group_never_spans_two_folds(seed):
    labels, groups = _dataset(seed)
    folds = stratified_group_folds(labels, groups, 5, seed)
    assert all(len(p) == 1 for p in _parts_of_groups(groups, folds).values())
    assert set(folds) == set(range(5))


def test_folds_are_stratified():
    labels, groups = _dataset(0)
    folds = stratified_group_folds(labels, groups, 5, 0)
    per = Counter(zip(labels, folds))
    sizes = Counter(labels)
    for c in sizes:
        counts = [per[(c, k)] for k in range(5)]
        assert max(counts) - min(counts) <= 5, (c, counts)  # groups are <= 4 samples (+ mixed labels)
    totals = Counter(folds)
    assert max(totals.values()) - min(totals.values()) <= 0.1 * len(labels) / 5


def test_seeded_and_deterministic():
    labels, groups = _dataset(3)
    assert stratified_group_folds(labels, groups, 5, 7) == stratified_group_folds(labels, groups, 5, 7)
    assert stratified_group_folds(labels, groups, 5, 7) != stratified_group_folds(labels, groups, 5, 8)


def test_weighted_split_7_3_is_grouped_and_stratified():
    labels, groups = _dataset(4, n_groups=600)
    side = stratified_group_split(labels, groups, [0.7, 0.3], seed=0)
    assert all(len(p) == 1 for p in _parts_of_groups(groups, side).values())
    for c, n in Counter(labels).items():
        share = sum(1 for lab, s in zip(labels, side) if lab == c and s == 1) / n
        assert abs(share - 0.3) < 0.12, (c, share)
    assert abs(sum(side) / len(side) - 0.3) < 0.03


def _records(spec):
    """spec: [(class_name, label, group)] -> Records."""
    return [Record(key=f"k{i}", label=lab, class_name=c, group=g, path=None, image=0)
            for i, (c, lab, g) in enumerate(spec)]


def test_small_class_is_warned_and_still_placed():
    spec = [("head", 0, f"h{i}") for i in range(20)] + [("tail", 1, "t0"), ("tail", 1, "t0"), ("tail", 1, "t1")]
    with pytest.warns(SmallClassWarning, match=r"class 'tail' has 3 sample\(s\) in 2 group\(s\), fewer than the 5"):
        out = assign_parts(_records(spec), folds=5, seed=0)
    tails = [r for r in out if r.class_name == "tail"]
    assert len(tails) == 3 and all(r.part.startswith("fold") for r in tails)
    assert tails[0].part == tails[1].part  # same group t0


def test_test_fraction_then_folds_and_fixed_parts_kept():
    spec = [("a", 0, f"a{i // 2}") for i in range(40)] + [("b", 1, f"b{i}") for i in range(20)]
    records = _records(spec) + [Record(key="fixed", label=0, class_name="a", group="x", part="test", image=0)]
    out = assign_parts(records, folds=3, seed=0, test_fraction=0.3)
    parts = Counter(r.part for r in out)
    assert set(parts) == {"test", "fold0", "fold1", "fold2"}
    assert 15 <= parts["test"] - 1 <= 21  # ~30% of the 60 free records, plus the fixed one
    by_group = defaultdict(set)
    for r in out:
        by_group[r.group].add(r.part)
    assert all(len(p) == 1 for p in by_group.values())
    assert next(r for r in out if r.key == "fixed").part == "test"


def test_bad_arguments_and_protocol_names():
    with pytest.raises(ValueError, match="test_fraction"):
        assign_parts([], folds=0, seed=0, test_fraction=1.0)
    with pytest.raises(ValueError, match="folds"):
        assign_parts([], folds=-1, seed=0)
    with pytest.raises(ValueError, match="weights"):
        stratified_group_split([0], ["g"], [0.5, 0.0], 0)
    assert protocol_name(["fold0", "fold1"], 2) == "2-fold"
    assert protocol_name(["train", "test"], 0, 0.3) == "train:test 70:30"
    assert protocol_name(["fold0", "test"], 5, 0.2) == "5-fold+test 20%"
    assert protocol_name(["train", "test"], 0) == "fixed-test"
