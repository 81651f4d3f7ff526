"""Turn one input image into the bytes stored in a shard: decode once, fix it, encode once.

Imports only PIL and numpy so that the shard writer's worker processes start fast (no torch).

What is fixed, so that every stored image is a plain 8-bit RGB picture the right way up:
- EXIF orientation is applied (phone photos, e.g. PAD-UFES-20 and SCIN, are often rotated);
- mode -> RGB: grayscale (L, 1), palette (P), CMYK, YCbCr/LAB/HSV are converted; 16-bit and 32-bit
  integer images (I;16*, I) are scaled to 8 bits (/257, i.e. 65535 -> 255), not clipped (PIL's
  own convert would turn a 16-bit image almost white); float images (F) are clipped to [0, 255];
  images with transparency (RGBA, LA, PA, P+transparency) are composited over black, the
  colour the training transform also uses for its rotation fill;
- resize so the shorter side is `image_size` (aspect kept, bicubic), never upscaling. JPEGs larger
  than needed are decoded at a reduced DCT scale first (PIL's draft mode): one cheaper decode.
An RGB JPEG/PNG that needs none of this is stored byte-for-byte (no re-encode, no quality loss).
Otherwise a JPEG input is re-encoded as JPEG quality 95 and anything else as PNG.
Any failure (truncated, zero-byte, not an image, ...) raises; the writer records the reason.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

_EXIF_ORIENTATION = 0x0112
_KEEP_FORMATS = {"JPEG": "jpg", "PNG": "png"}  # stored as-is when no change is needed
JPEG_QUALITY = 95


def target_size(size: tuple[int, int], image_size: int | None) -> tuple[int, int]:
    """(w, h) scaled so that min(w, h) == image_size, or unchanged if already that small or smaller."""
    w, h = size
    if image_size is None or min(w, h) <= image_size:
        return w, h
    s = image_size / min(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (see the module docstring for the rules)."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im).astype(np.float64)
        if im.mode == "I" and a.max(initial=0) > 65535:  # genuinely 32-bit data: use its range
            a = a * (255.0 / a.max())
        else:
            a = a / 257.0
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L").convert("RGB")
    if im.mode == "F":
        return Image.fromarray(np.clip(np.rint(np.asarray(im)), 0, 255).astype(np.uint8), mode="L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, P, CMYK (PIL undoes Adobe's inverted CMYK), YCbCr, LAB, HSV


def _encode(img: Image.Image, fmt: str) -> tuple[str, bytes]:
    buf = io.BytesIO()
    if fmt == "JPEG":  # a photo stays a lossy-small photo
        img.save(buf, format="JPEG", quality=JPEG_QUALITY)
        return "jpg", buf.getvalue()
    img.save(buf, format="PNG")
    return "png", buf.getvalue()


def _is_8bit(data: bytes, fmt: str) -> bool:
    """False for a 48-bit PNG: PIL opens it as 8-bit RGB, but its bytes must not be stored as they are."""
    return fmt != "PNG" or (len(data) > 25 and data[24] == 8)  # IHDR bit depth (signature 8 + len 4 + type 4 + w,h 8)


def encode_image(data: bytes, image_size: int | None) -> tuple[str, bytes]:
    """Raw file bytes -> (extension, stored bytes). Raises on anything that is not a readable image."""
    if not data:
        raise ValueError("empty file (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:  # PIL's message names a memory address: not reproducible
        raise ValueError(f"cannot identify image file (not a known image format; starts with {data[:8]!r})") from None
    with im:
        fmt, orientation = im.format, im.getexif().get(_EXIF_ORIENTATION, 1)
        want = target_size(im.size, image_size)
        w, h = want
        final = (h, w) if orientation in (5, 6, 7, 8) else want  # these orientations swap the axes

        if fmt == "JPEG" and want != im.size:
            im.draft(im.mode if im.mode in ("RGB", "L") else None, want)  # DCT-domain downscale, >= want
        im.load()  # the one full decode: this is what catches truncated and corrupt files
        if fmt in _KEEP_FORMATS and im.mode == "RGB" and orientation == 1 and want == im.size and _is_8bit(data, fmt):
            return _KEEP_FORMATS[fmt], data  # nothing to change: keep the original bytes
        img = to_rgb(ImageOps.exif_transpose(im))
    if img.size != final:  # from the original size: a draft-decoded size carries rounding of its own
        img = img.resize(final, Image.Resampling.BICUBIC)
    return _encode(img, fmt)


def encode_array(image, image_size: int | None) -> tuple[str, bytes]:
    """An in-memory PIL image or uint8 HxW / HxWx3 array (digits-LT) -> ("png", bytes)."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    img = to_rgb(img)
    size = target_size(img.size, image_size)
    if size != img.size:
        img = img.resize(size, Image.Resampling.BICUBIC)
    return _encode(img, "PNG")


def encode_task(task: tuple) -> tuple[str, bytes] | str:
    """Worker entry point: (path or None, in-memory image or None, image_size) -> result or error text.

    Returns the error as a string instead of raising, so one bad file never stops a worker pool.
    """
    path, image, image_size = task
    try:
        if image is not None:
            return encode_array(image, image_size)
        return encode_image(Path(path).read_bytes(), image_size)
    except Exception as exc:  # noqa: BLE001 - any failure means "reject this file, say why"
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
