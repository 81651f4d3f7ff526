"""The augmentation keys beyond DiffMIC's (data.crop=random_resized, data.color_jitter,
data.auto_augment=trivial) on both paths: per-sample draws fixed by (seed, epoch, key) whatever the
workers or the global RNG, an exact resume, the device's affine crop + jitter matching the PIL
path, and TrivialAugment refused on the device in one line."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from adpm_dist.config import ConfigError, load_config
from adpm_dist.data.augment import TRIVIAL_OPS, Extra, apply_trivial, crop_box, jitter, trivial_op
from adpm_dist.data.device_augment import DeviceFeed, HostSquares, augment_batch, draw_extra
from adpm_dist.data.feed import resolve_augment_on
from adpm_dist.data.manifest import load_manifest
from adpm_dist.data.stream import train_batches
from adpm_dist.data.transforms import ImageTransform
from adpm_dist.runtime.checkpoint import enter_epoch, rng_snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ALL = Extra(crop="random_resized", color_jitter=0.3, auto_augment="trivial")
DEVICE = Extra(crop="random_resized", color_jitter=0.3)


def _cpu(manifest, *, epoch=0, workers=0):
    tf = ImageTransform(24, True, hflip=True, rotation=20.0, extra=ALL)
    return train_batches(manifest, "train", 16, tf, epoch=epoch, seed=5, num_workers=workers)


def _device(manifest, *, epoch=0, workers=0):
    host = HostSquares(32, True, hflip=True, rotation=20.0, extra=DEVICE)
    return DeviceFeed(train_batches(manifest, "train", 16, host, epoch=epoch, seed=5, num_workers=workers), "cpu", 24,
                      True)


@pytest.mark.parametrize("make", [_cpu, _device], ids=["cpu", "device"])
def test_draws_depend_on_seed_epoch_and_key_only(digits_shards, make):
    manifest = load_manifest(digits_shards)
    seen = []
    for workers, rng_seed in ((0, 1), (2, 2)):
        torch.manual_seed(rng_seed), random.seed(rng_seed)
        seen.append({k: img for b in make(manifest, workers=workers) for k, img in zip(b["key"], b["image"])})
    common = seen[0].keys() & seen[1].keys()  # the budget's surplus differs with the worker count
    assert len(common) > 0.9 * len(seen[0]) and all(torch.equal(seen[0][k], seen[1][k]) for k in common)
    other = {k: img for b in make(manifest, epoch=1) for k, img in zip(b["key"], b["image"])}
    assert sum(not torch.equal(other[k], seen[0][k]) for k in other.keys() & common) > 0.9 * len(common)


@pytest.mark.parametrize("make", [_cpu, _device], ids=["cpu", "device"])
def test_resume_replays_the_same_augmented_batches(digits_shards, make):
    manifest = load_manifest(digits_shards)
    torch.manual_seed(0)
    full = [b["image"] for b in make(manifest, epoch=2)]
    state = rng_snapshot()
    torch.manual_seed(123)
    resumed = {"batch": 2, "epoch_rng": state, "rng": rng_snapshot(), "sums": {}}
    it, first, _, _ = enter_epoch(make(manifest, epoch=2), resumed)
    rest = [b["image"] for b in it]
    assert first == 2 and len(rest) == len(full) - 2 and all(torch.equal(a, b) for a, b in zip(rest, full[2:]))


def test_device_crop_and_jitter_match_the_pil_path():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:40, 0:40].astype(np.float32)
    img = Image.fromarray(np.clip(np.stack([x * 6, y * 6, (x + y) * 3], -1) + rng.normal(0, 3, (40, 40, 3)), 0,
                                  255).astype(np.uint8))
    params = (0.0, 0.0, 0.0) + draw_extra("k", 40, DEVICE)
    left, top, w, h = (int(v) for v in params[3:7])
    assert (w, h) != (40, 40)
    ref = jitter(img.crop((left, top, left + w, top + h)).resize((32, 32), Image.Resampling.BILINEAR), params[7:10])
    ref = torch.from_numpy(np.array(ref, dtype=np.float32)).permute(2, 0, 1)
    f = HostSquares(40, True, hflip=False, rotation=0.0, extra=DEVICE).fields(img, "k")
    assert torch.equal(f["aug"], torch.tensor(params))  # the host draws what draw_extra says
    out = augment_batch(f["image"][None], f["side"][None], f["aug"][None], 32, normalize=False)[0] * 255
    levels = (out - ref).abs().flatten()
    assert levels.median() < 2.0 and levels.kthvalue(int(0.9 * len(levels))).values < 5.0


def test_random_resized_crop_reaches_the_edges_of_a_wide_image():
    rng = random.Random(0)
    boxes = [crop_box(rng, 300, 100, (0.35, 1.0), (0.75, 1.3333)) for _ in range(200)]
    assert all(0 <= left and left + w <= 300 and 0 <= top and top + h <= 100 for left, top, w, h in boxes)
    assert min(left for left, _, _, _ in boxes) < 50 and max(left + w for left, _, w, _ in boxes) > 250  # not the centre
    assert crop_box(random.Random(0), 10, 10, (1.0, 1.0), (1.0, 1.0)) == (0, 0, 10, 10)


def test_every_trivial_op_keeps_size_and_mode():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    ops = {trivial_op(random.Random(i))[0] for i in range(400)}
    assert ops == set(TRIVIAL_OPS)
    for i in range(60):
        out = apply_trivial(img, *trivial_op(random.Random(i)))
        assert out.size == img.size and out.mode == "RGB"


def test_trivial_augment_on_the_device_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"data.auto_augment: 'trivial' .* data.augment_on=cpu"):
        load_config(None, ["data.auto_augment=trivial", "data.augment_on=device"])
    load_config(None, ["data.auto_augment=trivial", "data.augment_on=cpu", "data.crop=random_resized",
                       "data.color_jitter=0.4", "data.crop_scale=[0.5,1.0]"])
    with pytest.raises(ConfigError, match="data.crop_scale"):
        load_config(None, ["data.crop_scale=[0.5]"])
    assert resolve_augment_on("auto", "none", "cuda:0", "trivial") == "cpu"
    assert resolve_augment_on("auto", "none", "cuda:0", "none") == "device"
