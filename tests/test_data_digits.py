"""digits-LT: the long-tailed profile, seeding, and the train/val/test/fold partition."""

from collections import Counter

import numpy as np
import pytest

from adpm_dist.data.digits_lt import long_tail_counts, make_digits_lt


@pytest.fixture(scope="module")
def digits():
    return make_digits_lt(imbalance_ratio=50, n_max=150, seed=0, image_size=32)


def _parts(source):
    out = {}
    for r in source.records:
        out.setdefault(r.part, set()).add(r.key)
    return out


def test_profile_head_and_tail(digits):
    counts = Counter(r.label for r in digits.records if r.part == "train")
    assert sorted(counts.values(), reverse=True) == long_tail_counts(10, 150, 50)
    assert max(counts.values()) == 150
    assert min(counts.values()) == round(150 / 50)
    assert len(counts) == 10
    # the class order recorded in the options is the one actually used
    order = digits.options["class_order"]
    assert [counts[int(c)] for c in order] == long_tail_counts(10, 150, 50)


def test_val_and_test_parts_are_everything_not_drawn(digits):
    from sklearn.datasets import load_digits

    parts = _parts(digits)
    assert set(parts) == {"train", "val", "test"}
    assert not parts["train"] & parts["test"] and not parts["train"] & parts["val"] and not parts["val"] & parts["test"]
    assert len(digits.records) == len(load_digits().target) == 1797
    assert len(parts["train"]) + len(parts["val"]) + len(parts["test"]) == 1797
    val_counts = Counter(r.label for r in digits.records if r.part == "val")
    assert val_counts == {c: 10 for c in range(10)}  # balanced: 10 of every class
    test_counts = Counter(r.label for r in digits.records if r.part == "test")
    assert len(test_counts) == 10 and min(test_counts.values()) >= 1


def test_val_part_never_changes_the_training_set(digits):
    none = make_digits_lt(val_per_class=0)
    assert set(_parts(none)) == {"train", "test"}
    assert _parts(none)["train"] == _parts(digits)["train"]
    assert _parts(none)["test"] == _parts(digits)["test"] | _parts(digits)["val"]


def test_records_are_rgb_uint8_with_stable_keys(digits):
    r = digits.records[5]
    assert r.key == "digits-0005" and r.group == r.key
    assert r.class_name == str(r.label) and digits.class_names == [str(d) for d in range(10)]
    img = np.asarray(r.image)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()


def test_seeded_and_reproducible(digits):
    again = make_digits_lt(seed=0)
    assert _parts(again) == _parts(digits)
    other = make_digits_lt(seed=1)
    assert _parts(other)["train"] != _parts(digits)["train"]


def test_folds_split_drawn_samples_stratified():
    src = make_digits_lt(seed=0, folds=5, image_size=8)
    parts = _parts(src)
    assert set(parts) == {f"fold{k}" for k in range(5)} | {"val", "test"}
    drawn = set().union(*(parts[f"fold{k}"] for k in range(5)))
    assert drawn == _parts(make_digits_lt(seed=0, image_size=8))["train"]
    assert sum(len(v) for v in parts.values()) == 1797  # each key in exactly one part
    per_fold = Counter((r.part, r.label) for r in src.records if r.part.startswith("fold"))
    for label in range(10):
        sizes = [per_fold[(f"fold{k}", label)] for k in range(5)]
        assert max(sizes) - min(sizes) <= 1, sizes


def test_bad_options_fail():
    with pytest.raises(ValueError, match="n_max"):
        make_digits_lt(n_max=1000)
    with pytest.raises(ValueError, match="imbalance_ratio"):
        make_digits_lt(imbalance_ratio=0.5)
    with pytest.raises(ValueError, match="val_per_class"):
        make_digits_lt(val_per_class=100)  # would leave no test digit of the head class
