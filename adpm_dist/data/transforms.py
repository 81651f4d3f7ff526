"""Image transforms, following DiffMIC's (docs/algorithm.md, "Inputs and augmentation").

train: centre square crop -> resize -> random h-flip [-> random v-flip] -> random rotation in
       [-rotation, rotation] deg (bilinear, black fill) -> float in [0, 1] -> ImageNet normalisation
eval:  centre square crop -> resize -> float -> ImageNet normalisation
Randomness comes from torch's global RNG (per DataLoader worker, torch seeds it for us).
Optional (augment.py, off by default): data.crop=random_resized replaces the centre square by a
random box of the whole image; TrivialAugment (data.auto_augment) and colour jitter
(data.color_jitter) follow the rotation. With any of them on, every draw (flips and rotation too)
comes from the sample's seed string (`fields(image, seed)`, which the stream calls), so a sample's
augmentation depends on (run seed, epoch, rank, key, occurrence) only, not on the worker count.

Written directly against PIL and torch rather than as a torchvision v2.Compose: same steps, same
maths, about half the time per image on this machine (the transform costs more than the JPEG
decode, so it bounds every loader's images/s; benchmarks/RESULTS.md):
- crop and resize are PIL calls (PIL's resize is antialiased, as v2.Resize on PIL images is),
  flips are PIL transposes (exact pixel permutations), with no per-step dispatch machinery;
- rotation stays PIL's (bilinear, black fill), as in DiffMIC: single-threaded and faster on small
  images than torch's grid_sample, which with several intra-op threads on a busy 2-core machine
  measured 8 ms per 32x32 image instead of 0.1 ms; when the crop is at most 1.25x the output
  (the shards' 256 px for 224 px training), resize + flips + rotation are one affine resampling
  (`affine_coefficients`) instead of three passes;
- uint8 -> float -> normalise is one fused pass: (x - 255 mean) / (255 std).
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from PIL import Image

from .augment import Extra, apply_trivial, crop_box, jitter, jitter_factors, trivial_op

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_pil_rgb(img) -> Image.Image:
    """PIL image (any mode), uint8 (C,H,W) tensor with 1 or 3 channels, or uint8 (H,W[,C]) array -> RGB PIL."""
    if isinstance(img, torch.Tensor):
        a = img.detach().cpu()
        a = a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()
        img = Image.fromarray(np.ascontiguousarray(a))
    elif isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    return img if img.mode == "RGB" else img.convert("RGB")


# Up to this crop/output ratio (256 -> 224 is 1.14), resize, flips and rotation are ONE bilinear
# affine resampling: a plain bilinear sample is fine for a mild downscale. Beyond it the image is
# first resized with PIL's antialiasing filter (a 450 px crop read at 224 px would alias otherwise).
FUSE_MAX_SCALE = 1.25


def affine_coefficients(side: int, size: int, angle: float, hflip: bool, vflip: bool) -> tuple:
    """PIL AFFINE coefficients (a, b, c, d, e, f) mapping an output pixel (x, y) of a size x size image
    to the source square of `side` pixels: resize to `size`, flip, then rotate by `angle` degrees
    counter-clockwise about the centre, exactly as resize() -> transpose() -> rotate() compose.

    Continuous coordinates (pixel centres at +0.5, PIL's convention). rotate(): q = A (p - m) + m
    with m the centre and A = [[cos t, sin t], [-sin t, cos t]], t = -angle in radians; a flip maps
    q_x -> size - q_x; the resize maps q -> q * side / size.
    """
    t = -math.radians(angle)
    cos, sin, m, k = math.cos(t), math.sin(t), size / 2.0, side / size
    a, b, c = cos, sin, m - cos * m - sin * m  # q = [a b; d e] p + (c, f)
    d, e, f = -sin, cos, m + sin * m - cos * m
    if hflip:
        a, b, c = -a, -b, size - c
    if vflip:
        d, e, f = -d, -e, size - f
    return (k * a, k * b, k * c, k * d, k * e, k * f)


def centre_square(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The largest centred square box (left, top, right, bottom), rounded as torchvision's center_crop."""
    w, h = size
    s = min(w, h)
    left, top = int(round((w - s) / 2.0)), int(round((h - s) / 2.0))
    return left, top, left + s, top + s


class ImageTransform:
    """PIL image / uint8 tensor / uint8 array -> float tensor (3, image_size, image_size). Picklable."""

    def __init__(self, image_size: int, train: bool, hflip: bool = True, vflip: bool = False,
                 rotation: float = 30.0, normalize: bool = True, mean: tuple = IMAGENET_MEAN, std: tuple = IMAGENET_STD,
                 extra: Extra | None = None):
        self.image_size, self.train = image_size, train
        self.extra = extra if train and extra is not None and extra.active else None
        self.hflip, self.vflip, self.rotation = hflip and train, vflip and train, float(rotation) if train else 0.0
        mean = torch.tensor(tuple(mean) if normalize else (0.0, 0.0, 0.0)).view(3, 1, 1) * 255.0
        std = torch.tensor(tuple(std) if normalize else (1.0, 1.0, 1.0)).view(3, 1, 1) * 255.0
        self.shift, self.scale = mean, 1.0 / std

    def geometry(self, img, rng: random.Random | None = None) -> Image.Image:
        """Crop, resize, flips and rotation on the PIL image (uint8 RGB out); `rng` draws the random
        resized crop when data.crop=random_resized."""
        img = to_pil_rgb(img)
        s = self.image_size
        if self.extra is not None and self.extra.crop == "random_resized":
            left, top, w, h = crop_box(rng, img.width, img.height, self.extra.crop_scale, self.extra.crop_ratio)
            img = img.crop((left, top, left + w, top + h)).resize((s, s), Image.Resampling.BILINEAR)
        elif img.width != img.height:  # crop first: resize(box=...) would filter in pixels outside the box
            img = img.crop(centre_square(img.size))
        if rng is None:  # DiffMIC's draws, from torch's RNG as always (the golden runs pin them)
            hflip = self.hflip and bool(torch.rand(()) < 0.5)
            vflip = self.vflip and bool(torch.rand(()) < 0.5)
            angle = float(torch.empty(()).uniform_(-self.rotation, self.rotation)) if self.rotation else 0.0
        else:  # with an augment.py key on, every draw is the sample's own (seeded per key)
            hflip, vflip = self.hflip and rng.random() < 0.5, self.vflip and rng.random() < 0.5
            angle = rng.uniform(-self.rotation, self.rotation) if self.rotation else 0.0
        if self.rotation and img.width <= FUSE_MAX_SCALE * s:
            return img.transform((s, s), Image.Transform.AFFINE, affine_coefficients(img.width, s, angle, hflip, vflip),
                                 resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
        if img.size != (s, s):
            img = img.resize((s, s), Image.Resampling.BILINEAR)
        if hflip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if vflip:
            img = img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        if angle:
            img = img.rotate(angle, Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
        return img

    def __call__(self, img, seed: str | None = None) -> torch.Tensor:
        """`seed`: the sample's seed string for the augment.py draws (without one, drawn from torch's RNG)."""
        rng = None
        if self.extra is not None:
            rng = random.Random(seed if seed is not None else int(torch.randint(0, 2**62, ())))
        out = self.geometry(img, rng)
        if self.extra is not None:
            if self.extra.auto_augment == "trivial":
                out = apply_trivial(out, *trivial_op(rng))
            if self.extra.color_jitter > 0:
                out = jitter(out, jitter_factors(rng, self.extra.color_jitter))
        x = torch.from_numpy(np.array(out, dtype=np.uint8)).permute(2, 0, 1).float()
        return x.sub_(self.shift).mul_(self.scale).contiguous()

    def fields(self, img, seed: str) -> dict[str, torch.Tensor]:
        """The stream's per-sample call (stream._fields): the seed string makes the augment.py draws
        the same for a (run seed, epoch, rank, key, occurrence) whatever the workers."""
        return {"image": self(img, seed)}

    def __repr__(self) -> str:
        return (f"ImageTransform(image_size={self.image_size}, train={self.train}, hflip={self.hflip}, "
                f"vflip={self.vflip}, rotation={self.rotation}, extra={self.extra})")


def build_transform(
    image_size: int,
    train: bool,
    hflip: bool = True,
    vflip: bool = False,
    rotation: float = 30.0,
    normalize: bool = True,
    mean: tuple = IMAGENET_MEAN,
    std: tuple = IMAGENET_STD,
    extra: Extra | None = None,
) -> ImageTransform:
    """PIL image, uint8 (C,H,W) tensor or uint8 (H,W[,C]) array -> float tensor (3, image_size, image_size)."""
    return ImageTransform(image_size, train, hflip=hflip, vflip=vflip, rotation=rotation, normalize=normalize,
                          mean=mean, std=std, extra=extra)


def normalisation(cfg) -> tuple[tuple, tuple]:
    """(mean, std) the images are normalised with: data.mean / data.std if set, else the normalisation
    timm's hub weights were trained with (model.pretrained=true or a hub name), else ImageNet's."""
    d = cfg.data
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if not (d.mean and d.std) and cfg.model.pretrained:
        from ..models.backbone import hub_pretrained_cfg

        pretrained = hub_pretrained_cfg(cfg.model.backbone, cfg.model.pretrained)
        if pretrained is not None:
            mean, std = tuple(pretrained.get("mean", mean)), tuple(pretrained.get("std", std))
    return tuple(d.mean) or mean, tuple(d.std) or std


def transform_for(cfg, train: bool) -> ImageTransform:
    """The training or evaluation transform of a run's config (augmentation only when training)."""
    d = cfg.data
    mean, std = normalisation(cfg)
    if not train:
        return build_transform(d.image_size, train=False, mean=mean, std=std)
    return build_transform(d.image_size, train=True, hflip=d.hflip, vflip=d.vflip, rotation=d.rotation, mean=mean, std=std,
                           extra=Extra.of(d))
