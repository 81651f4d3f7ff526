"""Helpers shared by the readers of official dataset layouts: CSV files, image scans, accounting.

Every reader joins a metadata CSV to the image files on disk. Both sides can be wrong in a real
download (a row whose file is missing, a file no row mentions, a duplicate copy in a second
folder), and the manifest must account for every input, so the join reports each mismatch as a
rejection `{"file", "reason"}` instead of dropping it silently.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .records import Record

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def read_csv(path: Path, required: Sequence[str], dataset: str) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts (values stripped); fail naming the file and any missing column."""
    if not path.is_file():
        raise FileNotFoundError(f"{dataset}: {path} not found")
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel-saved files start with a BOM
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in required if c not in columns]
        if missing:
            raise ValueError(f"{dataset}: {path} lacks column(s) {missing}; found {columns}")
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


@dataclass
class ImageScan:
    """Image files found under some folders, indexed by file name and by stem."""

    by_name: dict[str, Path] = field(default_factory=dict)
    rejected: list[dict] = field(default_factory=list)  # non-images and duplicate copies

    def stem_index(self) -> dict[str, Path]:
        return {p.stem: p for p in self.by_name.values()}


def scan_images(folders: Iterable[Path]) -> ImageScan:
    """Recursively list image files (sorted, hidden files skipped) under `folders`.

    A second file with a name already seen (e.g. the same ISIC image in two extracted copies) is
    rejected as a duplicate; a file with another extension is rejected as "not an image file".
    """
    scan = ImageScan()
    for folder in folders:
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            if any(part.startswith(".") for part in f.relative_to(folder).parts):
                continue  # .DS_Store, ._resource forks, editor swap files
            if f.suffix.lower() not in IMAGE_EXTENSIONS:
                scan.rejected.append({"file": str(f), "reason": f"not an image file ({f.suffix or 'no extension'})"})
            elif f.name in scan.by_name:
                scan.rejected.append({"file": str(f), "reason": f"duplicate of {scan.by_name[f.name]}"})
            else:
                scan.by_name[f.name] = f
    return scan


def column_class(column: str, class_names: Sequence[str]) -> Callable[[dict[str, str]], str]:
    """``class_of`` for :func:`join_rows` when one column names the class (case-insensitive)."""
    def class_of(row: dict[str, str]) -> str:
        if row[column].upper() not in class_names:
            raise ValueError(f"unknown {column} {row[column]!r}")
        return row[column].upper()
    return class_of


def join_rows(rows: Sequence[dict[str, str]], scan: ImageScan, index: dict[str, Path], csv_name: str, *,
              file_column: str, class_of: Callable[[dict[str, str]], str],
              make_record: Callable[[dict[str, str], Path, str], Record],
              file_suffix: str = "") -> tuple[list[Record], list[dict]]:
    """Join metadata rows to the scanned images (``index``: the row's ``file_column`` value -> path).

    Accounts for every input: a row whose file is missing, a file listed twice, a row whose class
    ``class_of`` rejects (its ValueError is the reason) and an image no row lists are rejections
    naming the file; the rest become ``make_record(row, path, class_name)``.
    """
    records: list[Record] = []
    rejected, used = list(scan.rejected), set()
    for row in rows:
        path = index.get(row[file_column])
        if path is None:
            rejected.append(missing(row[file_column] + file_suffix, csv_name))
            continue
        if path in used:
            rejected.append({"file": str(path), "reason": f"listed twice in {csv_name}"})
            continue
        used.add(path)
        try:
            name = class_of(row)
        except ValueError as e:
            rejected.append({"file": str(path), "reason": str(e)})
            continue
        records.append(make_record(row, path, name))
    return records, rejected + unlisted(scan, used, csv_name)


def unlisted(scan: ImageScan, used: set[Path], csv_name: str) -> list[dict]:
    """Rejections for images on disk that no CSV row refers to."""
    return [{"file": str(p), "reason": f"image not listed in {csv_name}"}
            for p in sorted(scan.by_name.values()) if p not in used]


def missing(file: str, csv_name: str) -> dict:
    return {"file": file, "reason": f"listed in {csv_name} but not found on disk"}


def first_existing(root: Path, candidates: Sequence[str], dataset: str, what: str) -> Path:
    """The first of root/candidate that exists, or a FileNotFoundError listing what was expected."""
    for c in candidates:
        if (root / c).exists():
            return root / c
    raise FileNotFoundError(f"{dataset}: no {what} under {root} (expected one of: {', '.join(candidates)})")


def require_root(root, dataset: str, layout: str) -> Path:
    if root is None:
        raise ValueError(f"--dataset {dataset} needs --root DIR ({layout})")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--root {root} does not exist or is not a directory")
    return root


def no_test_root(test_root, dataset: str) -> None:
    if test_root is not None:
        raise ValueError(f"--test-root is only for --dataset imagefolder; {dataset} defines its own parts")
