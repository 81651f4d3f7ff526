"""DiffMIC's augmentation on whole batches, on the training device (`data.augment_on=device`).

The loader then does only what must happen on the host: decode (or read the cache), take the centre
square of the stored image as a uint8 slice (no resampling) and draw each sample's augmentation
parameters. The device does the rest for the whole batch at once:

train: [crop box +] resize + h/v-flip + rotation (bilinear, black fill) as ONE affine resampling
       (affine_grid + grid_sample), [colour jitter,] then ImageNet normalisation;
eval:  resize (bilinear, antialiased, as PIL's) + normalisation.

The same steps and maths as transforms.py (the per-image PIL path, `augment_on=cpu`): the affine
map is `affine_coefficients` rewritten in grid_sample's normalised coordinates, and a stored square
larger than FUSE_MAX_SCALE x the output is first resized with antialiasing, as there. The values
differ only by rounding (PIL returns uint8 after the resampling, here it stays float).

Determinism: a sample's parameters come from `draw_params(seed string)`, the string being
(run seed, epoch, rank, key, n-th occurrence of the key in the worker's stream): the same on every
run, resume, worker count and device, independent of any global RNG.

Optional keys (augment.py): data.crop=random_resized draws its box INSIDE the stored centre square
(the loader ships squares; the CPU path draws it in the whole image, edges included) and
data.color_jitter scales brightness, contrast and saturation per sample on the device;
data.auto_augment (TrivialAugment) is the CPU path's only (config.py refuses it here).

Batches on the host: {"image": (B,P,P,3) uint8 (the centre square at the top left of a P x P canvas,
P = the shards' stored size), "side": (B,) the square's side, "aug": (B,3) [angle, hflip, vflip], or
(B,10) with [box left, top, width, height (pixels of the square), brightness, contrast, saturation]
appended when a crop or jitter key is on};
with `data.cache=device` "image" is absent and "slot" says where the device cache holds it.
"""
from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .augment import Extra, crop_box, jitter_factors
from .transforms import FUSE_MAX_SCALE, IMAGENET_MEAN, IMAGENET_STD, affine_coefficients, centre_square


# ---------------------------------------------------------------- pure functions

def draw_params(seed: str, hflip: bool, vflip: bool, rotation: float) -> tuple[float, float, float]:
    """(angle in degrees, hflip 0/1, vflip 0/1) of one sample, from its seed string alone."""
    rng = random.Random(seed)
    h = float(hflip and rng.random() < 0.5)
    v = float(vflip and rng.random() < 0.5)
    angle = rng.uniform(-rotation, rotation) if rotation else 0.0
    return angle, h, v


def draw_extra(seed: str, side: int, extra: Extra) -> tuple[float, ...]:
    """(left, top, width, height, brightness, contrast, saturation) of one sample: the crop box in
    its side x side square (the whole square with data.crop=centre) and its jitter factors."""
    rng = random.Random(f"{seed}:extra")
    box = crop_box(rng, side, side, extra.crop_scale, extra.crop_ratio) if extra.crop == "random_resized" \
        else (0, 0, side, side)
    factors = jitter_factors(rng, extra.color_jitter) if extra.color_jitter > 0 else (1.0, 1.0, 1.0)
    return tuple(float(v) for v in (*box, *factors))


def jitter_batch(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation (B,3) on 0..255 float images (B,3,H,W), torchvision's adjust_*
    blends: with black, with the mean grey level, with the grey image; clamped after each."""
    f = factors.to(x.device, x.dtype).view(-1, 3, 1, 1, 1)
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    x = (x * f[:, 0]).clamp_(0, 255)
    mean = (x * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = ((x - mean) * f[:, 1] + mean).clamp_(0, 255)
    grey = (x * weights).sum(1, keepdim=True)
    return ((x - grey) * f[:, 2] + grey).clamp_(0, 255)


def affine_theta(sides: torch.Tensor, canvas: int, size: int, params: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) float64 affine_grid matrices (align_corners=False) sampling a size x size output from
    the side x side square at the top left of a canvas x canvas input: resize, flips, then rotation,
    exactly the map `transforms.affine_coefficients` gives PIL (tested against it), for a whole batch.

    PIL's map is src = A p + c in pixels (centres at +0.5). grid_sample's normalised coordinates are
    u = 2 x / W - 1 on both sides, so p = (u_out + 1) size / 2 and u_src = 2 src / canvas - 1:
    u_src = (size / canvas) A u_out + (size / canvas) A 1 + 2 c / canvas - 1.
    With a crop box in params[:, 3:7] (left, top, w, h), x is scaled by w / size and shifted by
    left, y by h / size and top, instead of both by side / size.
    """
    params = params.double()
    t = -torch.deg2rad(params[:, 0])
    cos, sin, m = torch.cos(t), torch.sin(t), size / 2.0
    hs = 1 - 2 * params[:, 1]  # -1 where flipped
    vs = 1 - 2 * params[:, 2]
    k = sides.double() / size  # affine_coefficients: rotation about the centre, flips, then the resize
    a, b, c = hs * cos, hs * sin, hs * (m - cos * m - sin * m) + params[:, 1] * size
    d, e, f = -vs * sin, vs * cos, vs * (m + sin * m - cos * m) + params[:, 2] * size
    if params.shape[1] >= 7:  # a crop box: its own scale per axis, and its offset
        kx, ky = params[:, 5] / size, params[:, 6] / size
        a, b, c = kx * a, kx * b, kx * c + params[:, 3]
        d, e, f = ky * d, ky * e, ky * f + params[:, 4]
    else:
        a, b, c, d, e, f = (k * v for v in (a, b, c, d, e, f))
    r = size / canvas
    row0 = torch.stack([r * a, r * b, r * (a + b) + 2 * c / canvas - 1], 1)
    row1 = torch.stack([r * d, r * e, r * (d + e) + 2 * f / canvas - 1], 1)
    return torch.stack([row0, row1], 1)


def _normalise(x: torch.Tensor, normalize: bool | tuple) -> torch.Tensor:
    """0..255 floats -> 0..1 (normalize=False), or normalised by ImageNet's mean/std (True) or by a
    (mean, std) pair (data.mean/data.std, or the hub weights' own: transforms.normalisation)."""
    if normalize is False:
        return x.div_(255.0)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if normalize is True else normalize
    mean = torch.tensor(mean, device=x.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(std, device=x.device).view(1, 3, 1, 1) * 255.0
    return x.sub_(mean).div_(std)


def _resize_squares(x: torch.Tensor, sides: torch.Tensor, which: torch.Tensor, size: int) -> None:
    """Antialiased bilinear resize (PIL's) of the squares `which` to size x size, in place at the top
    left of their canvas; one interpolate per distinct side."""
    for side in sorted(set(sides[which].tolist())):
        idx = torch.nonzero(which & (sides == side)).flatten().to(x.device)
        small = F.interpolate(x[idx, :, :side, :side], size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)
        x[idx] = 0.0
        x[idx, :, :size, :size] = small


def augment_batch(pixels: torch.Tensor, sides: torch.Tensor, params: torch.Tensor, size: int, *,
                  normalize: bool | tuple = True) -> torch.Tensor:
    """Training geometry for a batch: (B,P,P,3) uint8 -> (B,3,size,size) float32, on pixels' device.

    sides (B,): each stored square's side (its top-left corner is the canvas's); params (B,3):
    [angle degrees, hflip, vflip]. Fill outside the rotated square is black (0 before normalising).
    """
    with torch.autocast(device_type=pixels.device.type, enabled=False):  # float32 sampling under bf16 runs
        x = pixels.permute(0, 3, 1, 2).float()
        sides = sides.cpu().long()
        params = params.cpu().double().clone()
        big = sides > FUSE_MAX_SCALE * size  # first an antialiased resize, as transforms.py does
        if bool(big.any()):
            _resize_squares(x, sides, big, size)
            if params.shape[1] >= 7:  # the box, in pixels of the resized square
                params[big, 3:7] *= (size / sides[big].double()).unsqueeze(1)
            sides = torch.where(big, torch.full_like(sides, size), sides)
        theta = affine_theta(sides, x.shape[-1], size, params).to(x.device, torch.float32)
        grid = F.affine_grid(theta, [len(x), 3, size, size], align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if params.shape[1] >= 10 and bool((params[:, 7:10] != 1).any()):
            out = jitter_batch(out, params[:, 7:10])
        return _normalise(out, normalize)


def eval_batch(pixels: torch.Tensor, sides: torch.Tensor, size: int, *, normalize: bool | tuple = True) -> torch.Tensor:
    """Evaluation: each square resized (antialiased bilinear, as PIL) to size, then normalised."""
    with torch.autocast(device_type=pixels.device.type, enabled=False):
        x = pixels.permute(0, 3, 1, 2).float()
        sides = sides.cpu().long()
        if bool((sides != size).any()):
            _resize_squares(x, sides, sides != size, size)
        return _normalise(x[:, :, :size, :size].contiguous(), normalize)


def centre_square_array(image) -> np.ndarray:
    """PIL image or (H,W,3) uint8 array -> its centred square as a (s,s,3) uint8 array (a view when
    it already is an array: no copy, no resampling)."""
    a = np.asarray(image if isinstance(image, np.ndarray) else _rgb(image))
    left, top, right, bottom = centre_square((a.shape[1], a.shape[0]))
    return a[top:bottom, left:right]


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


# ---------------------------------------------------------------- host side (loader workers)

class CachedRef:
    """What a device-cache source hands over instead of pixels: where the square lives, and its side."""

    __slots__ = ("slot", "side")

    def __init__(self, slot: int, side: int):
        self.slot, self.side = slot, side


class HostSquares:
    """The loader's transform with `augment_on=device`: image -> batch fields (module docstring).

    canvas: P, the stored size (manifest.image_size). A square larger than P (shards written by other
    tools) is resized to P here with PIL's antialiasing, so every batch has one shape. Picklable."""

    def __init__(self, canvas: int, train: bool, hflip: bool = True, vflip: bool = False, rotation: float = 30.0,
                 extra: Extra | None = None):
        self.canvas, self.train = int(canvas), train
        self.hflip, self.vflip, self.rotation = hflip and train, vflip and train, float(rotation) if train else 0.0
        self.extra = extra if train and extra is not None and extra.active else None

    def _aug(self, seed: str, side: int) -> torch.Tensor:
        base = draw_params(seed, self.hflip, self.vflip, self.rotation) if self.train else (0.0, 0.0, 0.0)
        return torch.tensor(base if self.extra is None else base + draw_extra(seed, side, self.extra))

    def fields(self, image, seed: str) -> dict[str, torch.Tensor]:
        if isinstance(image, CachedRef):
            return {"slot": torch.tensor(image.slot), "side": torch.tensor(image.side), "aug": self._aug(seed, image.side)}
        square = centre_square_array(image)
        side = square.shape[0]
        if side > self.canvas:
            square = np.asarray(Image.fromarray(np.ascontiguousarray(square)).resize(
                (self.canvas, self.canvas), Image.Resampling.BILINEAR))
            side = self.canvas
        if not (square.flags.writeable and square.flags.c_contiguous):  # PIL's arrays are read-only
            square = np.array(square, order="C")
        if side == self.canvas:
            pixels = torch.from_numpy(square)
        else:
            pixels = torch.zeros(self.canvas, self.canvas, 3, dtype=torch.uint8)
            pixels[:side, :side] = torch.from_numpy(square)
        return {"image": pixels, "side": torch.tensor(side), "aug": self._aug(seed, side)}

    def __repr__(self) -> str:
        return (f"HostSquares(canvas={self.canvas}, train={self.train}, hflip={self.hflip}, vflip={self.vflip}, "
                f"rotation={self.rotation}, extra={self.extra})")


# ---------------------------------------------------------------- device side (where batches reach the model)

class DeviceFeed:
    """Wraps a loader whose batches come from HostSquares: each batch goes to `device` as uint8 (4x
    fewer bytes than float) and leaves as {"image": (B,3,size,size) float32 on device, ...}.

    `pixels_of(slots)`: the device cache's lookup (data.cache=device), else None. Everything else
    about the loader (len, set_epoch, assignment, ...) is the wrapped loader's."""

    def __init__(self, loader, device, size: int, train: bool, normalize: bool | tuple = True, pixels_of=None):
        self.loader, self.device, self.size, self.train = loader, torch.device(device), size, train
        self.normalize, self.pixels_of = normalize, pixels_of

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.__dict__["loader"], name)

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            yield self.to_device(batch)

    def to_device(self, batch: dict) -> dict:
        if "slot" in batch:
            pixels = self.pixels_of(batch["slot"].to(self.device))
        else:
            pixels = batch["image"].to(self.device, non_blocking=True)
        if self.train:
            image = augment_batch(pixels, batch["side"], batch["aug"], self.size, normalize=self.normalize)
        else:
            image = eval_batch(pixels, batch["side"], self.size, normalize=self.normalize)
        out = {k: v for k, v in batch.items() if k not in ("slot", "side", "aug")}
        out["image"] = image
        return out
