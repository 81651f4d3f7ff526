"""photo-LT: a long-tailed image folder cut from real photographs bundled inside pip packages.

    python -m benchmarks.photo_lt --out DIR [--ir 100] [--classes 14] [--size 32] [--n-max 200]
        [--test-per-class 50] [--seed 0]

Why: the study measurements (issue 28) need a long-tailed set that is not digits, builds offline
and is kept out of the repository. Source photographs are those shipped *inside* the wheels of
scikit-image (``skimage/data/*.png|jpg``, read from the package folder directly: nothing is ever
fetched, so pooch is never called) and scikit-learn (``load_sample_image``: china.jpg, flower.jpg).
scikit-image is the ``benchmarks`` extra of pyproject.toml (``pip install -e '.[benchmarks]'``).
Synthetic images of those folders (chessboard, colour wheel, logo, phantom, horse silhouette) and
near-duplicates (motorcycle_right) are not used; up to 17 photographs are (``PHOTOS``, in order).

One photograph = one class. Each photograph is split along its longer side into a training region
(the first ``1 - TEST_SHARE``) and a test region (the rest, after a gap of ``GAP_SHARE``): training
patches are cut from the first only, test patches from the second only, so no test pixel was ever
seen in training. A patch is a random square (side ``PATCH_SHARE`` of the shorter side, x0.8-1.2)
at a random position inside its region, randomly mirrored, resized to ``--size`` pixels.

``--tiles``: the training region is also cut into a grid of tiles, each at least as large as the
largest patch, and every training patch lies inside one tile (the tiles in a seeded round-robin, so
even a class of two patches has two). Patches of different tiles share no pixel, and ``DIR/groups.csv``
names each training patch's tile as its group: prepared with ``--groups DIR/groups.csv``, the CV's
folds hold disjoint pixels, as the test part does, instead of overlapping patches of one region (the
way several images of one patient or lesion are kept in one fold). Without ``--tiles``, patches are
placed anywhere in the training region, as before (the same files for the same arguments).

Counts: the exponential profile of digits-LT (adpm_dist/data/digits_lt.py), n_i = round(n_max x
IR^(-i/(K-1))) (at least 1) for the i-th class of a seeded random class order; the test part is
balanced, ``--test-per-class`` per class. Everything is drawn from ``numpy.random.default_rng(seed)``:
the same arguments give the same files, byte for byte.

Writes ``DIR/train/<class>/<class>_NNNN.png``, ``DIR/test/<class>/...``, ``DIR/patches.csv`` (part,
class, file, photo box: top, left, side) and ``DIR/photo_lt.json`` (arguments, class order, counts,
regions). Then, for instance (3 folds over the training images, ``test`` held out)::

    python -m adpm_dist.data.prepare --dataset imagefolder --root DIR/train --test-root DIR/test \\
        --out DIR/shards --folds 3 --image-size 32
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# (class name, package, file): real photographs in the wheels, largest and most textured first
PHOTOS = (
    ("astronaut", "skimage", "astronaut.png"), ("brick", "skimage", "brick.png"),
    ("camera", "skimage", "camera.png"), ("cell", "skimage", "cell.png"),
    ("chelsea", "skimage", "chelsea.png"), ("coffee", "skimage", "coffee.png"),
    ("coins", "skimage", "coins.png"), ("grass", "skimage", "grass.png"),
    ("gravel", "skimage", "gravel.png"), ("hubble", "skimage", "hubble_deep_field.jpg"),
    ("ihc", "skimage", "ihc.png"), ("moon", "skimage", "moon.png"),
    ("retina", "skimage", "retina.jpg"), ("rocket", "skimage", "rocket.jpg"),
    ("china", "sklearn", "china.jpg"), ("flower", "sklearn", "flower.jpg"),
    ("motorcycle", "skimage", "motorcycle_left.png"),
)
TEST_SHARE = 0.3     # of the longer side: the test region
GAP_SHARE = 0.02     # of the longer side: left out between the two regions
PATCH_SHARE = 0.25   # patch side as a share of the shorter side (before the x0.8-1.2 jitter)


def long_tail_counts(classes: int, n_max: int, ir: float) -> list[int]:
    """digits-LT's profile n_i = round(n_max IR^(-i/(K-1))), at least 1 per class."""
    return [max(1, round(n_max * ir ** (-i / (classes - 1)))) for i in range(classes)]


def load_photo(package: str, filename: str) -> np.ndarray:
    """uint8 RGB array of a photograph bundled in ``package`` (never downloaded)."""
    if package == "sklearn":
        from sklearn.datasets import load_sample_image

        return np.asarray(load_sample_image(filename))[..., :3]
    try:
        import skimage.data
    except ImportError:
        raise SystemExit("photo_lt: scikit-image is not installed (pip install -e '.[benchmarks]')") from None
    path = Path(skimage.data.__file__).parent / filename
    if not path.is_file():
        raise SystemExit(f"photo_lt: {path} is not in this scikit-image wheel (it would need a download)")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@dataclass(frozen=True)
class Region:
    """Rows [top, bottom) x columns [left, right) of a photograph."""
    top: int
    bottom: int
    left: int
    right: int

    def contains(self, top: int, left: int, side: int) -> bool:
        return self.top <= top and top + side <= self.bottom and self.left <= left and left + side <= self.right


def split_regions(height: int, width: int) -> tuple[Region, Region]:
    """(training region, test region): the longer side cut at 1 - TEST_SHARE, a gap between them."""
    long = max(height, width)
    cut, gap = round(long * (1 - TEST_SHARE)), round(long * GAP_SHARE)
    if height >= width:
        return Region(0, cut - gap, 0, width), Region(cut, height, 0, width)
    return Region(0, height, 0, cut - gap), Region(0, height, cut, width)


def tiles_of(region: Region, patch: int) -> list[Region]:
    """``region`` cut into a row-major grid of tiles, each at least ``patch`` pixels high and wide."""
    rows = max(1, (region.bottom - region.top) // patch)
    cols = max(1, (region.right - region.left) // patch)
    ys = np.linspace(region.top, region.bottom, rows + 1).round().astype(int)
    xs = np.linspace(region.left, region.right, cols + 1).round().astype(int)
    return [Region(int(ys[i]), int(ys[i + 1]), int(xs[j]), int(xs[j + 1])) for i in range(rows) for j in range(cols)]


def draw_patch(photo: np.ndarray, region: Region, size: int, rng: np.random.Generator) -> tuple[Image.Image, tuple]:
    """A random square patch inside ``region``, mirrored at random, resized to ``size``; and its box."""
    base = PATCH_SHARE * min(photo.shape[:2])
    limit = min(region.bottom - region.top, region.right - region.left)
    side = int(min(limit, round(base * rng.uniform(0.8, 1.2))))
    top = int(rng.integers(region.top, region.bottom - side + 1))
    left = int(rng.integers(region.left, region.right - side + 1))
    patch = Image.fromarray(photo[top:top + side, left:left + side])
    if rng.random() < 0.5:
        patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return patch.resize((size, size), Image.Resampling.BILINEAR), (top, left, side)


def build(out: Path, *, ir: float = 100.0, classes: int = 14, size: int = 32, n_max: int = 200,
          test_per_class: int = 50, seed: int = 0, tiles: bool = False) -> dict:
    """Write the dataset under ``out`` (which must not hold one already); returns photo_lt.json's content."""
    if not 2 <= classes <= len(PHOTOS):
        raise ValueError(f"--classes must be in [2, {len(PHOTOS)}] (bundled photographs), got {classes}")
    if ir < 1 or n_max < 1 or test_per_class < 1 or size < 8:
        raise ValueError(f"need --ir >= 1, --n-max >= 1, --test-per-class >= 1, --size >= 8 "
                         f"(got {ir}, {n_max}, {test_per_class}, {size})")
    if (out / "photo_lt.json").exists() or (out / "train").exists():
        raise ValueError(f"{out}: already holds a dataset; choose an empty --out")
    rng = np.random.default_rng(seed)
    photos = PHOTOS[:classes]
    order = [photos[i][0] for i in rng.permutation(classes)]  # order[i] gets the i-th largest count
    counts = dict(zip(order, long_tail_counts(classes, n_max, ir)))
    rows, regions = [], {}
    for name, package, filename in photos:  # a fixed order, so the draws do not depend on the class order
        photo = load_photo(package, filename)
        train_region, test_region = split_regions(*photo.shape[:2])
        regions[name] = {"source": f"{package}:{filename}", "shape": list(photo.shape[:2]),
                         "train": vars(train_region), "test": vars(test_region)}
        grid = tiles_of(train_region, math.ceil(1.2 * PATCH_SHARE * min(photo.shape[:2]))) if tiles else None
        if grid:
            regions[name]["tiles"] = [vars(t) for t in grid]
        for part, region, n in (("train", train_region, counts[name]), ("test", test_region, test_per_class)):
            folder = out / part / name
            folder.mkdir(parents=True, exist_ok=True)
            tile_of = tile_order(len(grid), n, rng) if grid and part == "train" else [None] * n
            for k in range(n):
                inside = region if tile_of[k] is None else grid[tile_of[k]]
                patch, (top, left, side) = draw_patch(photo, inside, size, rng)
                # with tiles, test files get names of their own: groups.csv's paths must name training images only
                file = folder / f"{name}{'_test' if tiles and part == 'test' else ''}_{k:04d}.png"
                patch.save(file)
                rows.append({"part": part, "class": name, "file": str(file.relative_to(out)), "top": top,
                             "left": left, "side": side} | ({"tile": tile_of[k]} if tiles else {}))
    if tiles:  # the group of each training patch: its tile (prepare --groups)
        with open(out / "groups.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "group"])
            writer.writerows([str(Path(r["file"]).relative_to("train")), f"{r['class']}_tile{r['tile']}"]
                             for r in rows if r["part"] == "train")
    with open(out / "patches.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    info = {"ir": ir, "classes": classes, "size": size, "n_max": n_max, "test_per_class": test_per_class,
            "seed": seed, "tiles": tiles, "class_order": order, "train_counts": counts, "regions": regions}
    (out / "photo_lt.json").write_text(json.dumps(info, indent=1))
    return info


def tile_order(tiles: int, n: int, rng: np.random.Generator) -> list[int]:
    """The tile of each of ``n`` patches: seeded round-robin over the tiles (a random order, repeated), so the
    patches spread evenly and a class of two patches has two tiles."""
    order = [int(t) for t in rng.permutation(tiles)]
    return [order[k % tiles] for k in range(n)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder (train/, test/, patches.csv)")
    ap.add_argument("--ir", type=float, default=100.0, help="imbalance ratio n_max / n_min (default 100)")
    ap.add_argument("--classes", type=int, default=14, help=f"photographs = classes, 2..{len(PHOTOS)} (default 14)")
    ap.add_argument("--size", type=int, default=32, help="patch side in pixels (default 32)")
    ap.add_argument("--n-max", type=int, default=200, help="training patches of the head class (default 200)")
    ap.add_argument("--test-per-class", type=int, default=50, help="balanced test part (default 50 per class)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiles", action="store_true",
                    help="training patches inside a grid of tiles, each tile a group (DIR/groups.csv for --groups)")
    args = ap.parse_args(argv)
    try:
        info = build(args.out, ir=args.ir, classes=args.classes, size=args.size, n_max=args.n_max,
                     test_per_class=args.test_per_class, seed=args.seed, tiles=args.tiles)
    except ValueError as e:
        print(f"photo_lt: {e}", file=sys.stderr)
        return 2
    counts = info["train_counts"]
    print(f"wrote {args.out}: {info['classes']} classes, {sum(counts.values())} training patches "
          f"({max(counts.values())} .. {min(counts.values())}, IR {max(counts.values()) / min(counts.values()):g}), "
          f"{info['test_per_class']} test patches per class")
    return 0


if __name__ == "__main__":
    sys.exit(main())
