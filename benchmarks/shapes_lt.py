"""shapes-LT: a long-tailed image folder of noisy synthetic shapes, neither digits nor photographs.

    python -m benchmarks.shapes_lt --out DIR [--ir 50] [--seed 0] [--size 32] [--n-max 150] [--test-per-class 100]

Why: the study calibration benchmark (benchmarks/study_calibration.py) needs a third kind of long-tailed
set that the study was never built on. Eight classes: four shapes (disc, square, triangle, ring) x two
colour families (warm, cool), drawn at a random position, size and rotation on a cluttered noisy
background, with the colour jittered so that the two families overlap a little. The counts follow
digits-LT's exponential profile n_i = round(n_max x IR^(-i/(K-1))) over a seeded class order; the test
part is balanced. Everything comes from ``numpy.random.default_rng(seed)``: the same arguments give
the same files.

Writes DIR/train/<class>/<class>_NNNN.png, DIR/test/<class>/..., DIR/shapes_lt.json (arguments, counts).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("disc", "square", "triangle", "ring")
FAMILIES = {"warm": (200, 90, 60), "cool": (60, 110, 200)}
CLASSES = [f"{s}_{f}" for s in SHAPES for f in FAMILIES]


def draw_one(cls: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One noisy image of class ``cls`` at 4x the size, drawn then downsampled (anti-aliased)."""
    shape, family = cls.split("_")
    big = size * 4
    background = rng.integers(60, 160, size=3)
    img = Image.new("RGB", (big, big), tuple(int(v) for v in background))
    d = ImageDraw.Draw(img)
    for _ in range(rng.integers(3, 7)):  # clutter: faint random ellipses
        x, y, r = rng.integers(0, big, 2).tolist() + [int(rng.integers(big // 16, big // 5))]
        tone = tuple(int(v) for v in np.clip(background + rng.integers(-40, 40, 3), 0, 255))
        d.ellipse((x - r, y - r, x + r, y + r), fill=tone)
    colour = tuple(int(v) for v in np.clip(np.array(FAMILIES[family]) + rng.normal(0, 35, 3), 0, 255))
    r = rng.uniform(0.18, 0.32) * big
    cx, cy = rng.uniform(r, big - r, 2)
    angle = rng.uniform(0, 2 * np.pi)
    if shape in ("disc", "ring"):
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        if shape == "ring":
            inner = r * rng.uniform(0.45, 0.6)
            d.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=tuple(int(v) for v in background))
    else:
        corners = 4 if shape == "square" else 3
        pts = [(cx + r * np.cos(angle + 2 * np.pi * i / corners), cy + r * np.sin(angle + 2 * np.pi * i / corners))
               for i in range(corners)]
        d.polygon(pts, fill=colour)
    small = np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.float32)
    small += rng.normal(0, 18, small.shape)
    return Image.fromarray(np.clip(small, 0, 255).astype(np.uint8))


def counts_for(ir: float, n_max: int, k: int) -> list[int]:
    return [max(1, round(n_max * ir ** (-i / (k - 1)))) for i in range(k)]


def build(out: Path, *, ir: float = 50.0, size: int = 32, n_max: int = 150, test_per_class: int = 100,
          seed: int = 0) -> dict:
    out = Path(out)
    if (out / "shapes_lt.json").exists():
        raise FileExistsError(f"{out} already holds a shapes-LT set")
    rng = np.random.default_rng(seed)
    order = [CLASSES[i] for i in rng.permutation(len(CLASSES))]
    counts = dict(zip(order, counts_for(ir, n_max, len(CLASSES))))
    for part, per_class in (("train", counts), ("test", {c: test_per_class for c in CLASSES})):
        for cls, n in per_class.items():
            folder = out / part / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw_one(cls, size, rng).save(folder / f"{cls}_{i:04d}.png")
    info = {"ir": ir, "size": size, "n_max": n_max, "test_per_class": test_per_class, "seed": seed, "counts": counts}
    (out / "shapes_lt.json").write_text(json.dumps(info, indent=1))
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ir", type=float, default=50.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--n-max", type=int, default=150)
    ap.add_argument("--test-per-class", type=int, default=100)
    a = ap.parse_args(argv)
    print(json.dumps(build(a.out, ir=a.ir, size=a.size, n_max=a.n_max, test_per_class=a.test_per_class, seed=a.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
