"""plan_data: which parts train, which images select the checkpoint, which part is scored (no image read)."""
from __future__ import annotations

from pathlib import Path

import pytest

from adpm_dist.config import load_config
from adpm_dist.data.manifest import load_manifest
from adpm_dist.data.prepare import prepare
from adpm_dist.data.plan import plan_data

TINY = Path(__file__).resolve().parents[1] / "configs/digits_lt_tiny.yaml"


@pytest.fixture(scope="module")
def no_val_part(tmp_path_factory):
    """digits-LT as older versions wrote it: train + test, no `val` part."""
    return prepare("digits_lt", tmp_path_factory.mktemp("noval"), image_size=8, val_per_class=0, progress=False)


def plan(manifest, *overrides):
    return plan_data(manifest, load_config(TINY, [f"data.shards={manifest.root}", *overrides]))


def test_auto_selects_on_the_val_part_and_never_trains_on_it(digits_shards):
    m = load_manifest(digits_shards)
    p = plan(m)
    assert p.val_part == "val" and p.train_parts == ["train"] and p.eval_part == "test"
    assert p.val_source() == (["val"], None) and p.num_val == m.num_samples["val"] == 100
    assert p.val_keys == frozenset()  # nothing carved out of the training set: it trains on all of it
    assert p.class_counts == [m.counts["train"][c] for c in m.class_names]


def test_auto_without_a_val_part_carves_out_of_the_training_parts(no_val_part):
    p = plan(no_val_part, "data.val_fraction=0.15")
    parts, keys = p.val_source()
    assert p.val_part is None and parts == ["train"] and keys == p.val_keys and p.num_val == len(keys) > 0
    counts = no_val_part.counts["train"]
    assert sum(p.class_counts) == sum(counts.values()) - len(keys)  # the carve-out is not trained on


def test_carve_ignores_the_val_part_and_does_not_train_on_it(digits_shards):
    p = plan(load_manifest(digits_shards), "data.val_part=carve")
    assert p.val_part is None and p.train_parts == ["train"] and len(p.val_keys) == p.num_val > 0


def test_a_named_part_selects_and_is_held_out_of_training(tmp_path):
    m = prepare("digits_lt", tmp_path, image_size=8, folds=3, progress=False)
    p = plan(m, "data.eval_part=fold1", "data.val_part=fold2")
    assert p.val_part == "fold2" and p.train_parts == ["fold0"] and p.eval_part == "fold1"
    with pytest.raises(ValueError, match="data.val_part: 'fold1' is the evaluation part"):
        plan(m, "data.eval_part=fold1", "data.val_part=fold1")
    with pytest.raises(ValueError, match="data.val_part: 'fold7' is not a part"):
        plan(m, "data.val_part=fold7")
    with pytest.raises(ValueError, match="data.train_parts includes the validation part 'fold2'"):
        plan(m, "data.eval_part=fold1", "data.val_part=fold2", "data.train_parts=fold0,fold2")


def test_train_share_trains_on_a_seeded_per_class_share_never_on_the_carve_out(no_val_part):
    full = plan(no_val_part, "data.val_fraction=0.15")
    half = plan(no_val_part, "data.val_fraction=0.15", "data.train_share=0.5")
    assert half.val_keys == full.val_keys                     # the same validation data chooses
    assert not half.unused_keys & half.val_keys and half.not_trained == half.val_keys | half.unused_keys
    assert [max(1, round(n / 2)) for n in full.class_counts] == half.class_counts
    assert plan(no_val_part, "data.val_fraction=0.15", "data.train_share=0.5").unused_keys == half.unused_keys
    assert plan(no_val_part, "data.val_fraction=0.15", "data.train_share=0.5", "run.seed=1").unused_keys != half.unused_keys
    assert full.unused_keys == frozenset()


def test_share_out_keeps_whole_groups_and_one_image_of_every_class():
    from adpm_dist.data.validation import share_out

    samples = [(f"p{i}_{j}", 0, f"p{i}") for i in range(10) for j in range(2)] + [("t0", 1, "t0")]
    unused = share_out(samples, 0.3, seed=0)
    assert "t0" not in unused                                 # a class of one image keeps it
    assert all((f"p{i}_0" in unused) == (f"p{i}_1" in unused) for i in range(10))   # a patient is wholly in or out
    assert len(unused) == 20 - 6                              # round(0.3 * 20) images kept, as 3 whole patients
