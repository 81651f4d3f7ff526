"""digits-LT: the embedded default dataset (no download, runs anywhere in seconds).

scikit-learn's bundled handwritten digits (1797 images, 8x8, values 0..16, ~180 per class) made
long-tailed with the usual exponential profile n_i = round(n_max * IR^(-i/(K-1))) for the i-th
class of a seeded random class order. Of the digits not drawn, `val_per_class` of every class form
a balanced `val` part for model selection (as ImageNet-LT's 20 per class: a carve-out of the
long-tailed training set would leave 0-1 images of a tail class to select on), and the rest a
fixed, roughly balanced `test` part: the long-tailed-recognition evaluation setting.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .folds import assign_parts
from .records import Record, Source

NUM_CLASSES = 10
CLASS_NAMES = [str(d) for d in range(NUM_CLASSES)]  # label == digit value
DEFAULT_VAL_PER_CLASS = 10  # undrawn digits per class in the balanced `val` part


def long_tail_counts(num_classes: int, n_max: int, imbalance_ratio: float) -> list[int]:
    """n_i = round(n_max * IR^(-i/(K-1))): head n_max, tail round(n_max / IR)."""
    if num_classes < 2:
        return [n_max] * num_classes
    return [round(n_max * imbalance_ratio ** (-i / (num_classes - 1))) for i in range(num_classes)]


def digit_to_rgb(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """8x8 array with values 0..16 -> uint8 (image_size, image_size, 3), bilinear upscaling."""
    gray = Image.fromarray(np.round(pixels * (255.0 / 16.0)).astype(np.uint8), mode="L")
    gray = gray.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(gray.convert("RGB"))


def make_digits_lt(
    imbalance_ratio: float = 50.0,
    n_max: int = 150,
    seed: int = 0,
    image_size: int = 32,
    folds: int = 0,
    val_per_class: int = DEFAULT_VAL_PER_CLASS,
) -> Source:
    """Build digits-LT with every part assigned.

    Returns a Source whose records carry in-memory uint8 RGB arrays: `train` (folds=0) or
    `fold0..fold{folds-1}` (stratified, seeded) for the drawn samples, `val` for `val_per_class`
    undrawn digits of each class, and `test` for the others. Keys are `digits-{sklearn index:04d}`;
    each sample is its own group.
    """
    source = read_digits_lt(imbalance_ratio=imbalance_ratio, n_max=n_max, seed=seed, image_size=image_size,
                            val_per_class=val_per_class)
    source.records = assign_parts(source.records, folds, seed)
    return source


def _draw(targets: np.ndarray, class_order: np.ndarray, counts: list[int], val_per_class: int,
          rng: np.random.Generator) -> tuple[set[int], set[int]]:
    """(training indices, balanced validation indices): class_order[i] gets counts[i] digits, then
    ``val_per_class`` of every class from the digits not drawn."""
    drawn: set[int] = set()
    for i, digit in enumerate(class_order):
        pool = np.flatnonzero(targets == digit)
        # At least one sample per class even for absurd IRs, so every class exists in training.
        drawn.update(int(j) for j in rng.choice(pool, size=max(counts[i], 1), replace=False))
    val: set[int] = set()  # drawn after the training set, so val_per_class never changes the latter
    for digit in range(NUM_CLASSES):
        pool = np.array([j for j in np.flatnonzero(targets == digit) if int(j) not in drawn])
        val.update(int(j) for j in rng.choice(pool, size=val_per_class, replace=False))
    return drawn, val


def read_digits_lt(
    *,
    root=None,
    test_root=None,
    seed: int = 0,
    image_size: int = 32,
    imbalance_ratio: float = 50.0,
    n_max: int = 150,
    val_per_class: int = DEFAULT_VAL_PER_CLASS,
) -> Source:
    """The reader behind `prepare --dataset digits_lt`: drawn samples have part None (the caller
    assigns train / folds), undrawn ones part "val" (``val_per_class`` per class, 0 for none) or "test"."""
    if root is not None or test_root is not None:
        raise ValueError("digits_lt is embedded: it takes no --root / --test-root")
    from sklearn.datasets import load_digits  # local import: sklearn is slow to import

    if imbalance_ratio < 1:
        raise ValueError(f"imbalance_ratio must be >= 1, got {imbalance_ratio}")
    digits = load_digits()
    images, targets = digits.images, digits.target
    available = np.bincount(targets, minlength=NUM_CLASSES)
    if not 1 <= n_max <= available.min():
        raise ValueError(f"n_max must be in [1, {available.min()}] (smallest digit class), got {n_max}")
    if not 0 <= val_per_class <= available.min() - n_max - 1:  # keep >= 1 test digit of every class
        raise ValueError(f"val_per_class must be in [0, {available.min() - n_max - 1}] with n_max={n_max} "
                         f"(the smallest digit class has {available.min()}), got {val_per_class}")

    rng = np.random.default_rng(seed)
    class_order = rng.permutation(NUM_CLASSES)  # class_order[i] gets the i-th largest count
    drawn, val = _draw(targets, class_order, long_tail_counts(NUM_CLASSES, n_max, imbalance_ratio), val_per_class, rng)
    records = [
        Record(
            key=f"digits-{j:04d}",
            label=int(targets[j]),
            class_name=CLASS_NAMES[int(targets[j])],
            group=f"digits-{j:04d}",
            part=None if j in drawn else "val" if j in val else "test",
            image=digit_to_rgb(images[j], image_size),
        )
        for j in range(len(targets))
    ]
    options = {
        "imbalance_ratio": imbalance_ratio,
        "n_max": n_max,
        "val_per_class": val_per_class,
        "class_order": [CLASS_NAMES[d] for d in class_order],
    }
    return Source(
        name="digits_lt",
        class_names=list(CLASS_NAMES),
        records=records,
        default_folds=0,
        default_image_size=image_size,
        options=options,
    )
