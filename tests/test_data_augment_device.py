"""data.augment_on=device: the batched affine resampling matches the per-image PIL path, its draws
are deterministic per (seed, epoch, rank, key, occurrence) whatever the workers, global RNG or a
resume, every rank still gets the same number of batches, and a tiny run trains with it."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from adpm_dist.data.device_augment import (DeviceFeed, HostSquares, affine_theta, augment_batch, draw_params,
                                           eval_batch)
from adpm_dist.data.feed import resolve_augment_on
from adpm_dist.data.manifest import load_manifest
from adpm_dist.data.stream import train_batches
from adpm_dist.data.transforms import ImageTransform
from adpm_dist.runtime.checkpoint import enter_epoch, rng_snapshot


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: batched resampling, one thread


def _photo(w: int, h: int) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    a = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], -1)
    a += np.random.default_rng(0).normal(0, 3, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _pil_reference(img, size, angle, hflip, vflip, monkeypatch):
    """transforms.ImageTransform with its three draws forced to (hflip, vflip, angle)."""
    import adpm_dist.data.transforms as tr

    draws = iter([torch.tensor(0.0 if hflip else 0.9), torch.tensor(0.0 if vflip else 0.9)])
    monkeypatch.setattr(tr.torch, "rand", lambda *a, **k: next(draws))

    class Uniform:
        def uniform_(self, lo, hi):
            return torch.tensor(angle)
    monkeypatch.setattr(tr.torch, "empty", lambda *a, **k: Uniform())
    out = ImageTransform(size, True, hflip=True, vflip=True, rotation=30.0)(img)
    monkeypatch.undo()
    return out


@pytest.mark.parametrize("size,angle,hflip,vflip", [(48, 17.0, 1, 0), (48, -25.0, 0, 1), (24, 10.0, 1, 1)])
def test_batched_affine_matches_the_pil_path(size, angle, hflip, vflip, monkeypatch):
    img = _photo(68, 54)  # stored 68x54: centre square 54 (54 -> 48 fused; 54 -> 24 resized first, as PIL)
    ref = _pil_reference(img, size, angle, hflip, vflip, monkeypatch)
    f = HostSquares(64, True).fields(img, "s")  # a canvas larger than the square: padding must not leak in
    assert f["side"] == 54 and f["image"].shape == (64, 64, 3) and f["image"].dtype == torch.uint8
    out = augment_batch(f["image"][None], f["side"][None], torch.tensor([[angle, hflip, vflip]]), size)[0]
    levels = ((out - ref).abs() * 255 * 0.226).flatten()  # back to 0..255 grey levels
    assert levels.median() < 1.0 and levels.kthvalue(int(0.9 * len(levels))).values < 1.5  # rounding; edges differ


def test_eval_matches_the_pil_path():
    img = _photo(68, 54)
    f = HostSquares(54, False).fields(img, "s")
    out = eval_batch(f["image"][None], f["side"][None], 48)[0]
    ref = ImageTransform(48, False)(img)
    assert ((out - ref).abs() * 255 * 0.226).max() < 1.5


def test_identity_theta_and_autocast_safety():
    theta = affine_theta(torch.tensor([8]), 8, 8, torch.tensor([[0.0, 0.0, 0.0]]))
    assert torch.allclose(theta[0], torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64), atol=1e-12)
    pixels = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = augment_batch(pixels, torch.tensor([8, 8]), torch.zeros(2, 3), 8, normalize=False)
    assert out.dtype == torch.float32
    assert torch.allclose(out * 255, pixels.permute(0, 3, 1, 2).float(), atol=1e-3)  # identity map: exact pixels


def test_draws_depend_on_the_seed_string_only():
    torch.manual_seed(1), random.seed(1)
    a = draw_params("0:3:0:key:1", True, True, 30.0)
    torch.manual_seed(2), random.seed(2)
    assert draw_params("0:3:0:key:1", True, True, 30.0) == a
    assert draw_params("0:4:0:key:1", True, True, 30.0) != a
    assert draw_params("0:3:0:key:1", False, False, 0.0) == (0.0, 0.0, 0.0)


def test_auto_means_device_only_with_an_accelerator():
    assert resolve_augment_on("auto", "none", "cpu") == "cpu"
    assert resolve_augment_on("auto", "none", "cuda:0") == "device"
    assert resolve_augment_on("auto", "device", "cpu") == "device"
    assert resolve_augment_on("cpu", "none", "cuda") == "cpu"


def _loader(manifest, *, epoch=0, rank=0, world=1, workers=0):
    host = HostSquares(32, True, hflip=True, vflip=True, rotation=30.0)
    loader = train_batches(manifest, "train", 16, host, epoch=epoch, seed=5, rank=rank, world_size=world,
                           num_workers=workers)
    return DeviceFeed(loader, "cpu", 24, True)


def test_draws_per_key_do_not_depend_on_workers_or_global_rng(digits_shards):
    manifest = load_manifest(digits_shards)
    seen = []
    for workers, seed in ((0, 1), (2, 2)):
        torch.manual_seed(seed)
        raw = _loader(manifest, workers=workers).loader
        seen.append({k: tuple(a.tolist()) for b in raw for k, a in zip(b["key"], b["aug"])})
        assert all(b["image"].dtype == torch.uint8 for b in raw)
    common = seen[0].keys() & seen[1].keys()  # the budget's surplus differs with the worker count
    assert len(common) > 0.9 * len(seen[0]) and all(seen[0][k] == seen[1][k] for k in common)
    angles = [a[0] for a in seen[0].values()]
    assert len(set(angles)) == len(angles) and max(angles) <= 30 and min(angles) >= -30


def test_resume_replays_the_same_augmented_batches(digits_shards):
    manifest = load_manifest(digits_shards)
    torch.manual_seed(0)
    full = [b["image"] for b in _loader(manifest, epoch=2)]
    assert full[0].shape == (16, 3, 24, 24) and full[0].dtype == torch.float32
    state = rng_snapshot()
    torch.manual_seed(123)  # whatever the RNG did after the checkpoint
    resumed = {"batch": 3, "epoch_rng": state, "rng": rng_snapshot(), "sums": {}}
    it, first, _, _ = enter_epoch(_loader(manifest, epoch=2), resumed)
    rest = [b["image"] for b in it]
    assert first == 3 and len(rest) == len(full) - 3
    assert all(torch.equal(a, b) for a, b in zip(rest, full[3:]))


def test_ranks_get_equal_batch_counts_and_disjoint_keys(digits_shards):
    manifest = load_manifest(digits_shards)
    runs = [list(_loader(manifest, rank=r, world=2)) for r in range(2)]
    assert len(runs[0]) == len(runs[1]) == len(_loader(manifest, rank=0, world=2)) > 0
    keys = [{k for b in run for k in b["key"]} for run in runs]
    assert not keys[0] & keys[1]
    assert all(b["image"].shape == (16, 3, 24, 24) for run in runs for b in run)
