"""One run per run directory: ``run.output_dir/run.lock``, held by rank 0 for the whole run.

Two runs writing into one directory mix their outputs silently (config.yaml of one, best.pt and the
checkpoints of the other). The lock is an ``flock`` on ``run.lock``, whose text names the holder (host,
pid, start time): the kernel releases an flock when its process dies, however it dies, so a lock left by
a killed run is recognised (the file is there, nobody holds it) and taken over, and a pid reused by
another program can never keep a directory locked. On a filesystem shared by several nodes the lock
works where the filesystem supports flock (local disks, NFSv4, Lustre with flock enabled).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from ..config import ConfigError

LOCK_FILE = "run.lock"


class RunLocked(ConfigError):
    """Another live run holds the directory (a ConfigError: one line, exit 2, nothing written)."""


class RunLock:
    """The held lock of one directory (``release`` at the end of the run, also after a failure)."""

    def __init__(self, path: Path, fd: int, took_over: dict | None):
        self.path, self.fd, self.took_over = path, fd, took_over
        # A forked child (a DataLoader worker) would share the flock and keep it after this process is
        # killed, until it notices: a retried trial would be refused meanwhile. Children drop their copy.
        os.register_at_fork(after_in_child=self._forget_in_child)

    def _forget_in_child(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # only the child's reference: the parent still holds the lock
            self.fd = -1

    def release(self) -> None:
        if self.fd < 0:
            return
        self.path.unlink(missing_ok=True)  # before the unlock: a waiting run then creates a fresh file
        os.close(self.fd)
        self.fd = -1


def holder_text() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def acquire(out: Path) -> RunLock:
    """Lock ``out`` (created if missing) or raise RunLocked naming the holder's host and pid."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(fd)
            os.close(fd)
            raise RunLocked(f"run.output_dir: {out} is in use by another run (pid {holder.get('pid', '?')} on host "
                            f"{holder.get('host', '?')}, started {holder.get('started', '?')}; {path}); wait for it to "
                            "end, stop it, or choose another run.output_dir") from None
        try:  # the file we locked may have been released and unlinked by its holder meanwhile: lock the new one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    stale = read_holder(fd) or None  # text without a live flock: a run that was killed
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder_text()) + "\n").encode("utf-8"), 0)
    os.fsync(fd)
    return RunLock(path, fd, stale)


def hold_run_dir(acc, out: Path) -> RunLock | None:
    """Rank 0 takes the lock; every rank learns the outcome (a refusal is raised on every rank, so none
    waits for the others in a collective). Returns the lock on rank 0, None elsewhere."""
    from .distributed import main_rank_verdict

    lock, refusal = None, None
    if acc.is_main_process:
        try:
            lock = acquire(out)
        except RunLocked as e:
            refusal = str(e)
    refusal = main_rank_verdict(acc, refusal)
    if refusal is not None:
        raise RunLocked(refusal)
    if lock is not None and lock.took_over:
        acc.print(f"took over {lock.path} of a run that is no longer running (pid {lock.took_over.get('pid', '?')} "
                  f"on host {lock.took_over.get('host', '?')})")
    return lock
