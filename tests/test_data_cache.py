"""data.cache=host|device: each image decoded once for the whole run (no epoch decodes), batches
identical to cache=none (same samples, order and tensors), bad samples still skipped and named, a
clear error when it does not fit."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from adpm_dist.config import ConfigError, DataConfig, load_config
from adpm_dist.data import cache, stream
from adpm_dist.data.feed import DataFeed
from adpm_dist.data.manifest import load_manifest
from adpm_dist.data.stream import BadSample, eval_batches, train_batches
from adpm_dist.data.transforms import build_transform

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def decodes(monkeypatch) -> list:
    calls: list = []
    real = stream.decode_sample
    monkeypatch.setattr(stream, "decode_sample", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    return calls


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: batched resampling, one thread


def _epochs(manifest, source, workers=0):
    """Two training epochs (global RNG seeded per epoch: the CPU transforms draw from it) and one eval pass."""
    out = []
    for epoch in (0, 1):
        torch.manual_seed(epoch)
        out += list(train_batches(manifest, "train", 32, build_transform(32, train=True), epoch=epoch, seed=1,
                                  num_workers=workers, source=source))
    return out + list(eval_batches(manifest, "test", 128, build_transform(32, train=False), source=source))


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["key"] == y["key"] and torch.equal(x["label"], y["label"]) and torch.equal(x["image"], y["image"])


def test_host_cache_decodes_each_image_once_and_changes_no_batch(digits_shards, decodes):
    manifest = load_manifest(digits_shards)
    plain = _epochs(manifest, None)
    decoded_plain = len(decodes)
    source = cache.host_cache(manifest, 32)
    filled = len(decodes) - decoded_plain
    assert filled in (len(manifest.index), 0)  # 0: another process of this node had filled its file
    assert source.path.parent == Path("/dev/shm") and source.arrays.pixels.shape == (len(manifest.index), 32, 32, 3)
    before = len(decodes)
    _same(_epochs(manifest, source), plain)
    assert len(decodes) == before  # no epoch decoded anything
    again = cache.host_cache(manifest, 32)  # a second process of the node: maps the same pages, decodes nothing
    assert again.decoded == 0 and again.path == source.path


def test_host_cache_is_shared_with_loader_workers(digits_shards):
    manifest = load_manifest(digits_shards)
    source = cache.host_cache(manifest, 32)
    torch.manual_seed(0)
    plain = list(train_batches(manifest, "train", 32, build_transform(32, train=False), epoch=0, seed=1,
                               num_workers=2))
    cached = list(train_batches(manifest, "train", 32, build_transform(32, train=False), epoch=0, seed=1,
                                num_workers=2, source=source))
    _same(cached, plain)


def test_device_cache_feed_gives_the_batches_of_the_uncached_feed(digits_shards, decodes):
    manifest = load_manifest(digits_shards)
    data = DataConfig(image_size=24, augment_on="device", cache="none", rotation=20.0)
    plain_feed = DataFeed(data, manifest, "cpu")
    on_device = DataFeed(DataConfig(image_size=24, augment_on="auto", cache="device", rotation=20.0), manifest, "cpu")
    assert on_device.augment_on == "device" and on_device.source.decoded == len(manifest.index)
    before = len(decodes)
    for epoch in (0, 1):
        a = list(plain_feed.train_batches("train", 32, epoch=epoch, seed=2))
        b = list(on_device.train_batches("train", 32, epoch=epoch, seed=2))
        _same(a, b)
        assert a[0]["image"].shape == (32, 3, 24, 24)
    assert len(decodes) - before == len(a) * 32 * 2  # the uncached feed decoded, the cached one did not
    _same(list(plain_feed.eval_batches("val", 64)), list(on_device.eval_batches("val", 64)))


def test_bad_samples_are_skipped_and_named_from_the_cache(digits_shards, tmp_path):
    from test_bad_data import corrupt

    out = tmp_path / "shards"
    shutil.copytree(digits_shards, out)
    shard = Path(load_manifest(out).parts["train"][0])
    keys = corrupt(shard)
    manifest = load_manifest(out)
    source = cache.host_cache(manifest, 32)
    tf = build_transform(32, train=False)

    def skipped(src):
        return sorted((s["key"], s["shard"], s["reason"]) for b in train_batches(manifest, "train", 16, tf, epoch=0,
                                                                                  seed=0, source=src) for s in b["skipped"])
    assert skipped(source) == skipped(None) and sorted(k for k, _, _ in skipped(source)) == sorted(keys)
    with pytest.raises(BadSample, match=f"bad sample '{keys[0]}' in shard {shard}"):
        list(eval_batches(manifest, "train", 64, tf, source=source))


def test_too_large_names_the_bytes_needed_and_available(digits_shards, monkeypatch):
    manifest = load_manifest(digits_shards)
    monkeypatch.setattr(cache, "device_available", lambda device: 10**6)
    need = cache.cache_bytes(len(manifest.index), 32)
    assert need == len(manifest.index) * (32 * 32 * 3 + 13)
    with pytest.raises(cache.CacheTooLarge, match=rf"data.cache=device: {len(manifest.index)} images x 32x32x3 B "
                                                   rf"need {need / 1e9:.2f} GB, 0.00 GB available"):
        cache.device_cache(manifest, 32, "cpu")
    assert cache.largest_dataset(24e9, 256) == 24e9 // (256 * 256 * 3 + 13)


def test_device_cache_with_cpu_augmentation_is_a_config_error():
    with pytest.raises(ConfigError, match="data.cache: 'device'.*data.augment_on=cpu"):
        load_config(ROOT / "configs" / "digits_lt_tiny.yaml", ["data.cache=device", "data.augment_on=cpu"])
