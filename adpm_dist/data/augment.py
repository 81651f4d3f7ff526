"""The augmentations beyond DiffMIC's (config keys data.crop, data.crop_scale, data.crop_ratio,
data.color_jitter, data.auto_augment): pure draws from a seeded `random.Random`, and their PIL ops.

- random resized crop (`data.crop=random_resized`): a box of `crop_scale` of the image's area and
  an aspect ratio log-uniform in `crop_ratio`, anywhere in the WHOLE stored image (a non-square
  photograph keeps its edges in play, where the centre square drops them), resized to the square
  training size; torchvision's RandomResizedCrop sampling (10 tries, then the centre box);
- colour jitter (`data.color_jitter=J`): brightness, contrast and saturation factors each uniform
  in [max(0, 1 - J), 1 + J], applied in that order (torchvision's adjust_* semantics; no hue);
- TrivialAugment (`data.auto_augment=trivial`, Mueller & Hutter 2021, torchvision's "wide"
  magnitude space): one op of 14 with one of 31 magnitudes per image, on the CPU path only.

Each sample's draws come from a seed string, (run seed, epoch, rank, key, occurrence) as in
device_augment.py: the same on every run, resume and worker count; none of them touches torch's
global RNG, so with these keys off the flips and rotation are drawn exactly as before.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageEnhance, ImageOps

_BINS = 31


@dataclass(frozen=True)
class Extra:
    """The data.* keys of this module (DataConfig's), as one picklable value."""

    crop: str = "centre"
    crop_scale: tuple = (0.35, 1.0)
    crop_ratio: tuple = (3 / 4, 4 / 3)
    color_jitter: float = 0.0
    auto_augment: str = "none"

    @classmethod
    def of(cls, data) -> "Extra":
        return cls(data.crop, tuple(data.crop_scale), tuple(data.crop_ratio), float(data.color_jitter),
                   data.auto_augment)

    @property
    def active(self) -> bool:
        return self.crop != "centre" or self.color_jitter > 0 or self.auto_augment != "none"


def crop_box(rng: random.Random, width: int, height: int, scale: tuple, ratio: tuple) -> tuple[int, int, int, int]:
    """(left, top, w, h) of a random resized crop (torchvision's RandomResizedCrop.get_params)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    aspect = width / height  # fallback: the centre box, its ratio clamped into `ratio`
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def jitter_factors(rng: random.Random, strength: float) -> tuple[float, float, float]:
    """(brightness, contrast, saturation) factors, each uniform in [max(0, 1 - J), 1 + J]."""
    lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
    return rng.uniform(lo, hi), rng.uniform(lo, hi), rng.uniform(lo, hi)


def jitter(img: Image.Image, factors: tuple[float, float, float]) -> Image.Image:
    b, c, s = factors
    img = ImageEnhance.Brightness(img).enhance(b)
    img = ImageEnhance.Contrast(img).enhance(c)
    return ImageEnhance.Color(img).enhance(s)


# TrivialAugmentWide's space (torchvision): op -> magnitude at bin i of 31 (signed ops flip a coin).
_SPACE = {
    "identity": (None, False), "shear_x": (lambda i: 0.99 * i / 30, True), "shear_y": (lambda i: 0.99 * i / 30, True),
    "translate_x": (lambda i: 32.0 * i / 30, True), "translate_y": (lambda i: 32.0 * i / 30, True),
    "rotate": (lambda i: 135.0 * i / 30, True), "brightness": (lambda i: 0.99 * i / 30, True),
    "color": (lambda i: 0.99 * i / 30, True), "contrast": (lambda i: 0.99 * i / 30, True),
    "sharpness": (lambda i: 0.99 * i / 30, True), "posterize": (lambda i: 8 - int(round(i / 5)), False),
    "solarize": (lambda i: 255.0 * (1 - i / 30), False), "autocontrast": (None, False), "equalize": (None, False),
}
TRIVIAL_OPS = tuple(_SPACE)


def trivial_op(rng: random.Random) -> tuple[str, float]:
    """(op, magnitude) of one TrivialAugment draw."""
    op = TRIVIAL_OPS[rng.randrange(len(TRIVIAL_OPS))]
    magnitude_of, signed = _SPACE[op]
    magnitude = 0.0 if magnitude_of is None else float(magnitude_of(rng.randrange(_BINS)))
    if signed and rng.random() < 0.5:
        magnitude = -magnitude
    return op, magnitude


def apply_trivial(img: Image.Image, op: str, m: float) -> Image.Image:
    """One TrivialAugment op on an RGB PIL image (geometric ops fill with black, as the rotation)."""
    affine = {"shear_x": (1, m, 0, 0, 1, 0), "shear_y": (1, 0, 0, m, 1, 0),
              "translate_x": (1, 0, m, 0, 1, 0), "translate_y": (1, 0, 0, 0, 1, m)}
    if op in affine:
        return img.transform(img.size, Image.Transform.AFFINE, affine[op], resample=Image.Resampling.NEAREST,
                             fillcolor=(0, 0, 0))
    if op == "rotate":
        return img.rotate(m, Image.Resampling.NEAREST, fillcolor=(0, 0, 0))
    enhance = {"brightness": ImageEnhance.Brightness, "color": ImageEnhance.Color,
               "contrast": ImageEnhance.Contrast, "sharpness": ImageEnhance.Sharpness}
    if op in enhance:
        return enhance[op](img).enhance(1.0 + m)
    if op == "posterize":
        return ImageOps.posterize(img, int(m))
    if op == "solarize":
        return ImageOps.solarize(img, int(m))
    if op == "autocontrast":
        return ImageOps.autocontrast(img)
    if op == "equalize":
        return ImageOps.equalize(img)
    return img  # identity
