"""The reader interface: what every dataset reader hands to the shard writer.

A reader turns one on-disk layout (or the embedded digits) into a `Source`: the class names in
label order plus one `Record` per image. Readers never decode images and never write anything;
decoding, resizing, rejecting unreadable files and fold assignment happen once, in one place
(`folds.assign_parts` and `shards.write_shards`), so every dataset gets the same behaviour.

To add a dataset: write `read_<name>(*, root, test_root, seed, image_size, **options) -> Source`
(see pad_ufes.py for a short example) and register it in `sources.READERS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Characters allowed in a sample key. WebDataset splits a tar member name at the FIRST dot of its
# base name (key.ext), and keys end up in CSV files and file names, so keep them boring.
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_key(*parts: str) -> str:
    """Join `parts` with '-' into a WebDataset-safe key (no dots, slashes or spaces)."""
    return "-".join(_UNSAFE.sub("_", str(p)).strip("_") or "_" for p in parts)


@dataclass(frozen=True)
class Record:
    """One image of a dataset, not yet decoded.

    Exactly one of `path` (a file on disk, read by the shard writer) or `image` (an in-memory
    PIL image or uint8 HxW / HxWx3 array) is set.
    """

    key: str  # stable, unique, WebDataset-safe (see safe_key)
    label: int  # index into Source.class_names
    class_name: str
    group: str  # patient / lesion / case / video id; folds never split a group
    part: str | None = None  # a fixed part such as "test"; None = assigned by the fold split
    path: Path | None = None
    image: Any = None


@dataclass
class Source:
    """A dataset as a reader sees it: class names in label order and its records."""

    name: str
    class_names: list[str]
    records: list[Record]
    # Inputs the reader itself had to skip (unsupported file, bad CSV row): {"file", "reason"}.
    rejected: list[dict] = field(default_factory=list)
    default_folds: int = 5  # used when the caller does not ask for a number of folds
    # Fraction held out as a stratified, grouped `test` part when the caller asks for neither folds
    # nor a fraction (HAM10000: 0.3, the paper's 7:3 split); 0 = no held-out test part.
    default_test_fraction: float = 0.0
    default_image_size: int = 256  # shorter image side stored in the shards
    options: dict = field(default_factory=dict)  # reader options worth recording in the manifest

    def __post_init__(self) -> None:
        seen: dict[str, Record] = {}
        for r in self.records:
            if r.key in seen:
                other = seen[r.key]
                raise ValueError(
                    f"{self.name}: two inputs map to the same sample key {r.key!r}: "
                    f"{other.path or other.key} and {r.path or r.key}; rename one of them"
                )
            seen[r.key] = r
            if not 0 <= r.label < len(self.class_names) or self.class_names[r.label] != r.class_name:
                raise ValueError(f"{self.name}: record {r.key!r} has inconsistent label/class_name")
