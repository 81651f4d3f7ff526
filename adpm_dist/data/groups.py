"""Patient / lesion groups for an image folder (`prepare --groups FILE.csv`), and exact duplicates.

An image folder carries no patient information, so each image is its own group and two images of
one lesion can fall on both sides of a fold or of the test split (a random HAM10000 split scores
far higher than a lesion-grouped one). `--groups` names each image's group; folds.assign_parts then
keeps a group inside one part, as it does for the readers whose metadata has groups.

FILE.csv: columns `image` and `group` (others ignored). `image` is the path relative to `--root`
(or to `--test-root` for its images), `sub/x.jpg` below a class folder included, e.g.
`melanoma/ISIC_001.jpg`; or a bare file name when only one image has it. Images the file does
not name stay groups of their own (a warning counts them); rows naming no image found are counted
too (they may be rejected files).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import warnings
from collections import defaultdict
from pathlib import Path

from .records import Record, Source


class GroupsError(ValueError):
    """--groups FILE cannot be applied: the message names the file, the row or the image."""


def read_groups(path: Path) -> dict[str, str]:
    """image -> group from FILE.csv; refuses missing columns, empty cells and an image given twice
    with two different groups."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("image", "group") if c not in (reader.fieldnames or [])]
            if missing:
                raise GroupsError(f"--groups {path}: no column(s) {missing} (columns: {reader.fieldnames}); "
                                  "expected `image` (path relative to --root, or file name) and `group`")
            mapping: dict[str, str] = {}
            for line, row in enumerate(reader, start=2):
                image, group = (row["image"] or "").strip().replace("\\", "/"), (row["group"] or "").strip()
                if not image or not group:
                    raise GroupsError(f"--groups {path} line {line}: empty `image` or `group`")
                if mapping.setdefault(image, group) != group:
                    raise GroupsError(f"--groups {path} line {line}: image {image!r} is in group {mapping[image]!r} "
                                      f"and {group!r}")
    except FileNotFoundError:
        raise GroupsError(f"--groups {path} does not exist") from None
    return mapping


def _relative(record: Record, roots: list[Path]) -> str:
    for root in roots:
        try:
            return record.path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            continue
    return record.path.name


def apply_groups(source: Source, path: Path, roots: list[Path]) -> Source:
    """`source` with each record's group from FILE.csv at `path` (module docstring); the manifest's
    options record the file (absolute path, sha256, rows, images matched)."""
    mapping = read_groups(path)
    by_name: dict[str, list[int]] = defaultdict(list)
    relative = [_relative(r, roots) if r.path is not None else r.key for r in source.records]
    for i, rel in enumerate(relative):
        by_name[rel.rsplit("/", 1)[-1]].append(i)
    group_of: dict[int, str] = {}
    unmatched = []
    for image, group in mapping.items():
        if "/" in image:
            hits = [i for i in by_name.get(image.rsplit("/", 1)[-1], []) if relative[i] == image]
        else:
            hits = by_name.get(image, [])
            if len(hits) > 1:
                raise GroupsError(f"--groups {path}: file name {image!r} matches {len(hits)} images "
                                  f"({relative[hits[0]]}, {relative[hits[1]]}, ...); give its path relative to --root")
        if not hits:
            unmatched.append(image)
        for i in hits:
            group_of[i] = group
    records = [dataclasses.replace(r, group=group_of[i]) if i in group_of else r for i, r in enumerate(source.records)]
    _check_fixed_parts(records, path)
    left = len(records) - len(group_of)
    if left:
        warnings.warn(f"--groups {path} names no group for {left} of {len(records)} image(s) (e.g. "
                      f"{next(relative[i] for i in range(len(records)) if i not in group_of)}): each is its own group")
    if unmatched:
        warnings.warn(f"--groups {path}: {len(unmatched)} row(s) name no image found (e.g. {unmatched[0]!r})")
    options = {**source.options, "groups": {"file": str(Path(path).resolve()), "sha256": _sha256(Path(path)),
                                            "rows": len(mapping), "images_matched": len(group_of),
                                            "groups": len(set(group_of.values()))}}
    return dataclasses.replace(source, records=records, options=options)


def _check_fixed_parts(records: list[Record], path: Path) -> None:
    """A group with images in a fixed part (--test-root's `test`) and outside it cannot be kept whole."""
    parts: dict[str, set] = defaultdict(set)
    for r in records:
        parts[r.group].add(r.part)
    split = sorted(g for g, p in parts.items() if len(p) > 1)
    if split:
        raise GroupsError(f"--groups {path}: group(s) {split[:3]} have images under both --root and --test-root; "
                          "a group must be on one side (move its images, or drop --test-root and carve the test "
                          "part with --test-fraction)")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def warn_duplicates(records: list[Record], limit: int = 3) -> int:
    """Warn when files with exactly the same bytes are in different groups (they can land on both
    sides of a fold or of the test split). Returns the number of such duplicate sets."""
    by_digest: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        if r.path is not None:
            try:
                by_digest[_sha256(Path(r.path))].append(r)
            except OSError:
                continue  # unreadable: the shard writer rejects it with its reason
    crossing = [rs for rs in by_digest.values() if len({r.group for r in rs}) > 1]
    if crossing:
        shown = "; ".join(" = ".join(f"{r.path} (group {r.group})" for r in rs[:2]) for rs in crossing[:limit])
        warnings.warn(f"{len(crossing)} set(s) of identical images (same bytes) are in different groups, so they can "
                      f"fall into different folds or parts: {shown}{'; ...' if len(crossing) > limit else ''}; "
                      "give them one group (--groups) or remove the copies")
    return len(crossing)
