"""Transforms: DiffMIC's crop/resize/augment/normalise chain, on PIL, tensors and arrays."""

import numpy as np
import pytest
import torch
from PIL import Image

from adpm_dist.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform


def _stripes(w=90, h=30):
    """Red | green | blue thirds: the centre square crop must keep only the green third."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 3, 0] = 255
    a[:, w // 3 : 2 * w // 3, 1] = 255
    a[:, 2 * w // 3 :, 2] = 255
    return a


@pytest.mark.parametrize("kind", ["pil", "tensor", "array"])
def test_eval_crop_resize_shape(kind):
    a = _stripes()
    img = {"pil": Image.fromarray(a), "tensor": torch.from_numpy(a).permute(2, 0, 1), "array": a}[kind]
    x = build_transform(24, train=False, normalize=False)(img)
    assert type(x) is torch.Tensor and x.shape == (3, 24, 24) and x.dtype == torch.float32
    assert torch.allclose(x[1], torch.ones(24, 24)) and x[0].abs().max() < 1e-6 and x[2].abs().max() < 1e-6


def test_normalisation_uses_imagenet_stats():
    x = build_transform(8, train=False)(Image.new("RGB", (10, 10), (128, 128, 128)))
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x.mean(dim=(1, 2)), expected, atol=1e-5) and x.std(dim=(1, 2)).max() < 1e-5


def test_grey_input_gets_three_channels():
    x = build_transform(8, train=False, normalize=False)(torch.full((1, 12, 12), 255, dtype=torch.uint8))
    assert x.shape == (3, 8, 8) and torch.allclose(x, torch.ones_like(x))


def test_train_is_random_but_eval_is_not():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    train, ev = build_transform(32, train=True), build_transform(32, train=False)
    torch.manual_seed(0)
    outs = [train(img) for _ in range(8)]
    assert all(o.shape == (3, 32, 32) for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    assert torch.equal(ev(img), ev(img))
    # rotation fills with black: after normalisation black is -mean/std, reached in some corner
    black = (-torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)).view(3, 1, 1)
    assert any(torch.isclose(o, black, atol=1e-5).all(dim=0).any() for o in outs)


def test_no_augmentation_switches():
    img = Image.fromarray(_stripes(30, 30))
    tf = build_transform(16, train=True, hflip=False, vflip=False, rotation=0.0)
    assert torch.equal(tf(img), build_transform(16, train=False)(img))
