"""`--dataset imagefolder`: ROOT/<class>/**/*.{jpg,jpeg,png,bmp,tif,tiff}, optionally a --test-root alike.

Every entry found under ROOT (and --test-root) becomes a sample or a rejection with its reason in
the manifest; nothing is left out unrecorded:
- class folders are ROOT's visible sub-folders (a symbolic link to a folder counts: it is how a
  class is often assembled from elsewhere); a file directly in ROOT is rejected (no class);
- inside a class folder, images at any depth belong to the class (as torchvision's ImageFolder
  reads them); hidden entries (.DS_Store, .git, ._x.jpg), symbolic links to folders (which could
  loop or repeat a class's images), other file types and anything that is not a regular file are
  rejected, each with its reason (a hidden folder is one rejection, not one per file in it);
- sample keys are unique for distinct files and depend only on the file's own path: `class-stem`
  (`test-class-stem` for --test-root; a nested file's sub-folders join its stem with `_`; characters
  a key cannot hold become `_`). A non-ASCII name (`猫.jpg`) gets `-` + 8 hex digits of its path's
  sha256 (its characters would all become `_`), and so do all files whose keys would still collide
  (`dup.jpg` + `dup.png`, `a b.jpg` + `a_b.jpg`).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

from .layout import IMAGE_EXTENSIONS
from .records import Record, Source, safe_key


def _class_dirs(root: Path, what: str, rejected: list[dict]) -> list[Path]:
    """ROOT's class folders, sorted; everything else in ROOT is a rejection."""
    if not root.is_dir():
        raise FileNotFoundError(f"{what} {root} does not exist or is not a directory")
    dirs = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.startswith("."):
            rejected.append(_hidden(entry))
        elif entry.is_dir():
            dirs.append(entry)
        else:
            rejected.append({"file": str(entry), "reason": f"not inside a class folder ({what} DIR/<class>/...)"})
    if not dirs:
        raise ValueError(f"{what} {root} has no class folders (expected {root}/<class>/*.jpg|png|...)")
    return dirs


def _hidden(entry: Path) -> dict:
    kind = "folder, not read" if entry.is_dir() and not entry.is_symlink() else "file"
    return {"file": str(entry), "reason": f"hidden {kind} (name starts with '.')"}


def _images(folder: Path, rejected: list[dict]) -> list[Path]:
    """Image files under a class folder at any depth, sorted by path; the rest are rejections."""
    images: list[Path] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.startswith("."):
            rejected.append(_hidden(entry))
        elif entry.is_symlink() and entry.is_dir():
            rejected.append({"file": str(entry), "reason": "symbolic link to a folder, not followed "
                                                           "(it could loop or repeat images)"})
        elif entry.is_dir():
            images += _images(entry, rejected)
        elif not entry.is_file():
            what = "broken symbolic link" if entry.is_symlink() else "not a regular file"
            rejected.append({"file": str(entry), "reason": what})
        elif entry.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(entry)
        else:
            rejected.append({"file": str(entry), "reason": f"unsupported file type {entry.suffix or '(none)'}"})
    return images


def _scan(root: Path, what: str, rejected: list[dict]) -> list[tuple[str, Path, str]]:
    """(class name, image path, its path below the class folder: sub/file.ext) under `root`."""
    found = []
    for d in _class_dirs(root, what, rejected):
        images = _images(d, rejected)
        if not images:
            raise ValueError(f"empty class folder {d}: no {'/'.join(IMAGE_EXTENSIONS)} files")
        found += [(d.name, f, f.relative_to(d).as_posix()) for f in images]
    return found


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]


def unique_keys(files: list[tuple[str, str, str]]) -> list[str]:
    """One unique key per (prefix, class, path below the class folder), each from its own path only
    (module docstring); prefix "" for ROOT, "test" for --test-root."""
    names = ["/".join(p for p in f if p) for f in files]
    keys = []
    for (prefix, cls, below), name in zip(files, names):
        stem = below.rsplit(".", 1)[0].replace("/", "_")
        key = safe_key(*(p for p in (prefix, cls, stem) if p))
        keys.append(key if name.isascii() else f"{key}-{_digest(name)}")
    holders: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        holders[key].append(i)
    for same in holders.values():
        if len(same) > 1:  # e.g. dup.jpg + dup.png: each gets its name's digest
            for i in same:
                keys[i] = f"{keys[i]}-{_digest(names[i])}"
    return keys


def read_imagefolder(*, root=None, test_root=None, seed: int = 0, image_size: int | None = None) -> Source:
    """`ROOT/<class>/**/*.{jpg,jpeg,png,bmp,tif,tiff}`; class names = sorted folder names.

    With `test_root` (same class folders, a subset is allowed), its images form the fixed `test`
    part and ROOT's images are left for train / folds. Each image is its own group (the layout
    carries no patient information). `seed` and `image_size` are unused here (the fold split and
    resizing happen later) but accepted for the uniform reader signature.
    """
    del seed, image_size
    if root is None:
        raise ValueError("--dataset imagefolder needs --root DIR (ROOT/<class>/*.jpg)")
    root = Path(root)
    rejected: list[dict] = []
    found = _scan(root, "--root", rejected)
    class_names = sorted({cls for cls, _, _ in found})
    label_of = {c: i for i, c in enumerate(class_names)}
    parts: list[str | None] = [None] * len(found)
    if test_root is not None:
        test_root = Path(test_root)
        test = _scan(test_root, "--test-root", rejected)
        unknown = sorted({cls for cls, _, _ in test} - set(label_of))
        if unknown:
            raise ValueError(f"--test-root {test_root} has class folders not in --root {root}: {unknown}")
        found, parts = found + test, parts + ["test"] * len(test)
    keys = unique_keys([("test" if part else "", cls, below) for (cls, _, below), part in zip(found, parts)])
    records = [Record(key=key, label=label_of[cls], class_name=cls, group=key, part=part, path=path)
               for (cls, path, _), key, part in zip(found, keys, parts)]
    return Source(
        name="imagefolder",
        class_names=class_names,
        records=records,
        rejected=rejected,
        default_folds=0 if test_root is not None else 5,
        options={"root": str(root.resolve()), "test_root": str(test_root.resolve()) if test_root else None},
    )
