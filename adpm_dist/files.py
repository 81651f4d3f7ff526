"""Atomic writes and the clean-up of what a killed writer left behind: one convention for the project.

Every result file (metrics.json, predictions.csv, report.md, best.pt, manifest.json, protocol.json
...) is written to a hidden temporary name beside it, flushed, and renamed over the target: a run
killed mid-write leaves the old file (or none), never half a new one. The temporary names all look
like ``.NAME.tmp-PID``, so the next start of the same output removes them (``remove_leftovers``) and
no reader ever mistakes one for data.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

TMP_INFIX = ".tmp-"


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_INFIX}{os.getpid()}")


def is_leftover(path: Path) -> bool:
    return path.name.startswith(".") and TMP_INFIX in path.name


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: object, *, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def atomic_torch_save(obj: object, path: str | Path) -> Path:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def remove_leftovers(directory: str | Path, *, recursive: bool = False) -> list[Path]:
    """Delete the temporary files a killed writer left in ``directory``; returns what was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = directory.rglob(".*") if recursive else directory.glob(".*")
    removed = [p for p in found if p.is_file() and is_leftover(p)]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed
