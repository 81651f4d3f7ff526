"""Dataset readers: one function per on-disk layout, all returning a `records.Source`.

Reader signature (keyword-only, so `prepare` can call them uniformly):

    read_<name>(*, root, test_root, seed, image_size, **extra) -> Source

`extra` are dataset-specific options (e.g. digits_lt's imbalance_ratio); a reader rejects
arguments it does not understand (it has no **kwargs catch-all), so typos fail loudly.
Readers only list files and labels; they do not open images (the shard writer does, once).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .digits_lt import read_digits_lt
from .ham10000 import read_ham10000
from .hyper_kvasir import read_hyper_kvasir
from .layout import IMAGE_EXTENSIONS
from .pad_ufes import read_pad_ufes
from .records import Record, Source, safe_key
from .scin import read_scin


def _class_dirs(root: Path, what: str) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"{what} {root} does not exist or is not a directory")
    dirs = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)
    if not dirs:
        raise ValueError(f"{what} {root} has no class folders (expected {root}/<class>/*.jpg|png|...)")
    return dirs


def _scan_class_dir(d: Path, rejected: list[dict]) -> list[Path]:
    """Image files of one class folder, sorted; other visible files are reported as rejected."""
    images = []
    for f in sorted(d.iterdir(), key=lambda f: f.name):
        if f.name.startswith(".") or f.is_dir():
            continue  # .DS_Store, editor files, nested folders: not ours
        if f.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(f)
        else:
            rejected.append({"file": str(f), "reason": f"unsupported file type {f.suffix or '(none)'}"})
    if not images:
        raise ValueError(f"empty class folder {d}: no {'/'.join(IMAGE_EXTENSIONS)} files")
    return images


def read_imagefolder(*, root=None, test_root=None, seed: int = 0, image_size: int | None = None) -> Source:
    """`ROOT/<class>/*.{jpg,jpeg,png,bmp,tif,tiff}`; class names = sorted folder names.

    With `test_root` (same class folders, a subset is allowed), its images form the fixed `test`
    part and ROOT's images are left for train / folds. Each image is its own group (the layout
    carries no patient information). `seed` and `image_size` are unused here (the fold split and
    resizing happen later) but accepted for the uniform reader signature.
    """
    del seed, image_size
    if root is None:
        raise ValueError("--dataset imagefolder needs --root DIR (ROOT/<class>/*.jpg)")
    root = Path(root)
    dirs = _class_dirs(root, "--root")
    class_names = [d.name for d in dirs]
    label_of = {c: i for i, c in enumerate(class_names)}
    rejected: list[dict] = []
    records = [
        Record(key=key, label=label_of[d.name], class_name=d.name, group=key, path=f)
        for d in dirs
        for f in _scan_class_dir(d, rejected)
        for key in [safe_key(d.name, f.stem)]
    ]
    if test_root is not None:
        test_root = Path(test_root)
        test_dirs = _class_dirs(test_root, "--test-root")
        unknown = [d.name for d in test_dirs if d.name not in label_of]
        if unknown:
            raise ValueError(f"--test-root {test_root} has class folders not in --root {root}: {unknown}")
        records += [
            Record(key=key, label=label_of[d.name], class_name=d.name, group=key, part="test", path=f)
            for d in test_dirs
            for f in _scan_class_dir(d, rejected)
            for key in [safe_key("test", d.name, f.stem)]
        ]
    return Source(
        name="imagefolder",
        class_names=class_names,
        records=records,
        rejected=rejected,
        default_folds=0 if test_root is not None else 5,
        options={"root": str(root.resolve()), "test_root": str(test_root.resolve()) if test_root else None},
    )


# name (the --dataset value) -> reader; the official layouts are described in each reader's module.
READERS: dict[str, Callable[..., Source]] = {
    "digits_lt": read_digits_lt,
    "ham10000": read_ham10000,
    "hyper_kvasir": read_hyper_kvasir,
    "imagefolder": read_imagefolder,
    "pad_ufes": read_pad_ufes,
    "scin": read_scin,
}
