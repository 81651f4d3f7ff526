"""Streaming loaders: exact, equal len() per rank, disjoint training shares, exact eval coverage."""

from collections import Counter

import pytest
import torch

from adpm_dist.data import build_transform, eval_batches, load_manifest, prepare_dataset, train_batches

WORLD = 2


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream") / "shards"
    prepare_dataset("digits_lt", out, image_size=16, samples_per_shard=50, progress=False)
    return load_manifest(out)


@pytest.fixture(scope="module")
def tf_train():
    return build_transform(16, train=True)


@pytest.fixture(scope="module")
def tf_eval():
    return build_transform(16, train=False)


def _run(loader):
    batches = list(loader)
    assert len(batches) == len(loader)  # exactly len() batches, never more or fewer
    return batches


def _keys(batches):
    return [k for b in batches for k in b["key"]]


def test_train_equal_len_disjoint_ranks(manifest, tf_train):
    n = manifest.num_samples["train"]  # 420
    loaders = [train_batches(manifest, "train", 32, tf_train, epoch=0, seed=0, rank=r, world_size=WORLD)
               for r in range(WORLD)]
    assert len(loaders[0]) == len(loaders[1]) == n // (32 * WORLD)
    runs = [_run(lo) for lo in loaders]
    for batches in runs:
        assert all(b["image"].shape == (32, 3, 16, 16) and b["image"].dtype == torch.float32 for b in batches)
        assert all(b["label"].dtype == torch.long and len(b["key"]) == 32 for b in batches)
    k0, k1 = set(_keys(runs[0])), set(_keys(runs[1]))
    assert len(k0) == len(_keys(runs[0])) and not k0 & k1
    assert k0 | k1 <= {r.key for r in manifest.rows("train")}
    # labels travel with their keys
    label_of = {r.key: r.label for r in manifest.index}
    assert all(label_of[k] == int(lab) for b in runs[0] for k, lab in zip(b["key"], b["label"]))


def test_train_shuffle_is_seeded_per_epoch(manifest, tf_eval):
    def order(epoch, seed=0):
        return _keys(train_batches(manifest, "train", 16, tf_eval, epoch=epoch, seed=seed))

    first = order(0)
    assert first == order(0) and Counter(first).most_common(1)[0][1] == 1
    assert first != order(0, seed=1)
    # set_epoch on one loader == a fresh loader for that epoch, and epochs differ
    lo = train_batches(manifest, "train", 16, tf_eval, epoch=0, seed=0)
    lo.set_epoch(1)
    assert _keys(lo) == order(1) != first


def test_train_exclude_keys_and_workers(manifest, tf_train):
    rows = manifest.rows("train")
    exclude = frozenset(r.key for r in rows[:100])  # e.g. a validation carve-out
    loaders = [train_batches(manifest, ["train"], 20, tf_train, epoch=3, seed=0, rank=r, world_size=WORLD,
                             num_workers=2, exclude_keys=exclude) for r in range(WORLD)]
    assert len(loaders[0]) == len(loaders[1]) == (len(rows) - 100) // (20 * WORLD)
    keys = [set(_keys(_run(lo))) for lo in loaders]
    assert not keys[0] & keys[1] and not (keys[0] | keys[1]) & exclude


def test_train_tiny_part_gives_one_batch(manifest, tf_eval):
    rows = manifest.rows("train")
    shard_a, shard_b = rows[0].shard, next(r.shard for r in rows if r.shard != rows[0].shard)
    keep = [r.key for r in rows if r.shard == shard_a][:4] + [r.key for r in rows if r.shard == shard_b][:3]
    exclude = frozenset(r.key for r in rows) - set(keep)
    loaders = [train_batches(manifest, "train", 64, tf_eval, epoch=0, seed=0, rank=r, world_size=WORLD,
                             exclude_keys=exclude) for r in range(WORLD)]
    runs = [_run(lo) for lo in loaders]
    assert [len(lo) for lo in loaders] == [1, 1]
    assert [len(b[0]["key"]) for b in runs] == [3, 3]  # 7 // 2 each: the 4-sample rank stops at 3
    assert set(runs[0][0]["key"]).isdisjoint(runs[1][0]["key"])


def test_train_needs_a_shard_per_rank_and_worker(manifest, tf_eval):
    rows = manifest.rows("train")
    one_shard = frozenset(r.key for r in rows if r.shard != rows[0].shard)  # exclude all but one shard
    with pytest.raises(ValueError, match="samples-per-shard"):
        train_batches(manifest, "train", 8, tf_eval, epoch=0, seed=0, rank=0, world_size=2, exclude_keys=one_shard)
    n_shards = len(manifest.parts["train"])
    with pytest.raises(ValueError, match=f"{n_shards} shard"):
        train_batches(manifest, "train", 8, tf_eval, epoch=0, seed=0, world_size=2, num_workers=n_shards)


def test_loader_workers_adapt_to_the_shards_a_rank_has(manifest, tf_eval, capsys):
    """A rank with fewer training shards than data.num_workers uses one worker per shard and says so
    once, instead of refusing; fewer shards than ranks is still refused (the stream deals whole shards)."""
    from adpm_dist.config import DataConfig
    from adpm_dist.data.feed import DataFeed, workers_for

    rows = manifest.rows("train")
    shards = sorted({r.shard for r in rows})
    two = frozenset(r.key for r in rows if r.shard not in shards[:2])  # leave two shards
    assert workers_for(manifest, "train", two, 1, 4) == 2 and workers_for(manifest, "train", two, 2, 4) == 1
    assert workers_for(manifest, "train", frozenset(), 1, 2) == 2 and workers_for(manifest, "train", two, 1, 0) == 0
    assert workers_for(manifest, "train", two, 3, 2) == 0  # stream.train_batches refuses this one
    data = DataConfig(augment_on="cpu", image_size=16, hflip=False, rotation=0.0)
    feed = DataFeed(data, manifest, "cpu")
    for epoch in (0, 1):
        loader = feed.train_batches("train", 8, epoch=epoch, seed=0, num_workers=4, exclude_keys=two)
        assert sum(len(b["key"]) for b in loader) == len(loader) * 8
    said = capsys.readouterr().out
    assert said.count("2 training loader worker(s) per rank instead of data.num_workers=4") == 1, said
    with pytest.raises(ValueError, match="samples-per-shard"):
        feed.train_batches("train", 8, epoch=0, seed=0, world_size=3, num_workers=2, exclude_keys=two)


def test_eval_covers_every_sample_exactly_once(manifest, tf_eval):
    parts = ["train", "val", "test"]
    loaders = [eval_batches(manifest, parts, 100, tf_eval, rank=r, world_size=WORLD) for r in range(WORLD)]
    keys = [_keys(_run(lo)) for lo in loaders]
    assert Counter(keys[0] + keys[1]) == Counter(r.key for r in manifest.index)


def test_eval_order_is_deterministic_and_worker_independent(manifest, tf_eval):
    def keys(**kw):
        return _keys(_run(eval_batches(manifest, "train", 64, tf_eval, rank=1, world_size=WORLD, **kw)))

    first = keys()
    assert first == keys() and first == keys(num_workers=2)


def test_eval_include_and_exclude(manifest, tf_eval):
    rows = manifest.rows("test")
    include = {r.key for r in rows[::3]}
    exclude = frozenset(list(include)[:10])
    loaders = [eval_batches(manifest, "test", 64, tf_eval, rank=r, world_size=WORLD, include_keys=include,
                            exclude_keys=exclude) for r in range(WORLD)]
    keys = [_keys(_run(lo)) for lo in loaders]
    assert sorted(keys[0] + keys[1]) == sorted(include - exclude)
    assert abs(len(keys[0]) - len(keys[1])) <= 1


def test_eval_images_are_not_augmented(manifest, tf_eval):
    a = next(iter(eval_batches(manifest, "test", 8, tf_eval)))
    b = next(iter(eval_batches(manifest, "test", 8, tf_eval)))
    assert a["key"] == b["key"] and torch.equal(a["image"], b["image"])


def test_bad_arguments(manifest, tf_eval):
    with pytest.raises(ValueError, match="available"):
        eval_batches(manifest, "fold7", 8, tf_eval)
    with pytest.raises(ValueError, match="rank"):
        train_batches(manifest, "train", 8, tf_eval, epoch=0, seed=0, rank=2, world_size=2)


def test_balance_and_split_budget():
    from adpm_dist.data.stream import balance, split_budget

    dealt = balance([50, 50, 50, 20, 50, 50], 2)
    assert sorted(i for d in dealt for i in d) == list(range(6))
    loads = [sum([50, 50, 50, 20, 50, 50][i] for i in d) for d in dealt]
    assert max(loads) - min(loads) <= 50 and sorted(loads) == [120, 150]
    assert all(d == sorted(d) for d in dealt)  # each bin keeps the (shuffled) input order
    assert balance([5], 3) == [[0], [], []]
    assert split_budget(10, [3, 3, 3]) == [4, 3, 3] and sum(split_budget(97, [40, 0, 13, 7])) == 97
    assert split_budget(5, [0, 0]) == [0, 0] and split_budget(0, [4, 4]) == [0, 0]


def test_ranks_read_only_their_shards_and_fill_the_shortfall(manifest, tf_eval, monkeypatch):
    """Unequal shards (420 = 8 x 50 + 20): a rank short of the budget re-reads its own shards."""
    from adpm_dist.data import stream

    opened = []
    real = stream.read_shard
    monkeypatch.setattr(stream, "read_shard", lambda path: (opened.append(path), real(path))[1])
    n = manifest.num_samples["train"]
    for epoch in range(3):
        seen = []
        for rank in range(WORLD):
            opened.clear()
            lo = train_batches(manifest, "train", 10, tf_eval, epoch=epoch, seed=0, rank=rank, world_size=WORLD)
            mine = {p for p, _ in lo.assignment(epoch)[rank]}
            keys = _keys(_run(lo))
            assert len(keys) == len(lo) * 10 == (n // 20) * 10
            assert set(opened) <= mine  # never another rank's shard
            held = sum(c for _, c in lo.assignment(epoch)[rank])
            assert len(set(keys)) == min(held, len(keys))  # duplicates only to fill a shortfall
            seen.append(set(keys))
        assert not seen[0] & seen[1]
        assert len(seen[0] | seen[1]) >= n - 50  # at most one shard's worth is not seen this epoch


def test_worker_budgets_add_up_exactly(manifest, tf_eval):
    for rank in range(WORLD):
        lo = train_batches(manifest, "train", 7, tf_eval, epoch=1, seed=5, rank=rank, world_size=WORLD,
                           num_workers=2)
        keys = _keys(_run(lo))
        held = sum(c for _, c in lo.assignment(1)[rank])
        assert len(keys) == len(lo) * 7 and len(set(keys)) == min(held, len(keys))


def test_accelerate_prepare_returns_the_loader_unchanged(manifest, tf_eval):
    """Accelerate only rewraps torch DataLoaders; ours must come back as is (no rank-0 dispatch)."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    from accelerate import Accelerator

    lo = eval_batches(manifest, "test", 8, tf_eval)
    try:
        assert Accelerator(cpu=True).prepare(lo) is lo
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()
