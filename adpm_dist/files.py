"""Atomic writes and the clean-up of what a killed writer left behind: one convention for the project.

Every result file (metrics.json, predictions.csv, report.md, best.pt, manifest.json, protocol.json,
config.yaml, summary.csv, the predict CSV ...) is written to a hidden temporary name beside it,
flushed and fsynced, renamed over the target, and the directory is fsynced: a run killed mid-write
(or a machine that loses power after the rename) leaves the old file (or none), never half a new one. The temporary names all look
like ``.NAME.tmp-PID``, so the next start of the same output removes them (``remove_leftovers``) and
no reader ever mistakes one for data.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

TMP_INFIX = ".tmp-"


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_INFIX}{os.getpid()}")


def is_leftover(path: Path) -> bool:
    return path.name.startswith(".") and TMP_INFIX in path.name


def fsync_dir(directory: str | Path) -> None:
    """Make a rename in ``directory`` durable (POSIX: the entry lives in the directory's own data)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform or filesystem without directory handles: the rename is all we can do
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "w", **open_kwargs) -> Iterator:
    """``with atomic_writer(p, newline="") as f:`` write ``f`` as if it were ``p``; ``p`` changes only when
    the block ends without an exception (the temporary file is removed otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # ENOSPC, EDQUOT, EIO ...: name the file (a write error names none) and the cause
        tmp.unlink(missing_ok=True)
        if e.filename is not None or e.errno is None:
            raise
        raise OSError(e.errno, f"cannot write {path} ({errno.errorcode.get(e.errno, e.errno)}: {e.strerror})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_writer(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: object, *, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def atomic_torch_save(obj: object, path: str | Path) -> Path:
    import torch

    with atomic_writer(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def fsync_tree(directory: str | Path) -> None:
    """fsync every file under ``directory`` and the directories themselves (a checkpoint directory
    written by other libraries, e.g. accelerate's save_state, before it is renamed into place)."""
    directory = Path(directory)
    for p in sorted(directory.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        if p.is_file() and not p.is_symlink():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        elif p.is_dir():
            fsync_dir(p)
    fsync_dir(directory)


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


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs on this machine (another user's counts as running): whose
    reservation or temporary file a crash left behind."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
