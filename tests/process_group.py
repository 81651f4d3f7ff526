"""Start test subprocesses in a session of their own and end all of it, whatever happens.

`subprocess.run(..., timeout=...)` kills only the direct child: an `accelerate launch`, a Ray driver
or a quality.py run leaves its workers running (and holding the output pipes, so the test hangs in
communicate). Every test that launches processes goes through these helpers instead:

- ``start_session``: Popen with ``start_new_session=True`` (its own session and process group);
- ``end_session``: SIGKILL every process of that session, and every descendant found while the
  leader was alive (torchrun starts its workers in sessions of their own, so the session alone
  would miss them); returns what it had to kill;
- ``run_session``: ``subprocess.run`` on top of the two, raising ``TimeoutExpired`` after the
  kill, with what the process printed until then.

Only processes of the sessions the tests started are touched: never a kill by name.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil


def start_session(cmd: list[str], **popen_kwargs) -> subprocess.Popen:
    """Popen in a new session (and process group) whose id is the child's pid."""
    return subprocess.Popen(cmd, start_new_session=True, **popen_kwargs)


def session_of(pid: int) -> int | None:
    """Session id of a live process (None if gone or a zombie: those only wait for their parent to reap them)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, _ppid, _pgrp, session = stat.rsplit(")", 1)[1].split()[:4]  # fields after "(comm)"
    return None if state in "ZX" else int(session)


def session_processes(sid: int) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and session_of(int(p)) == sid]


def describe(pids) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(f"{pid}: {Path(f'/proc/{pid}/cmdline').read_bytes().replace(bytes(1), b' ')[:150].decode()}")
        except OSError:
            out.append(f"{pid}: (gone)")
    return out


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def end_session(proc: subprocess.Popen, grace: float = 0.0) -> list[str]:
    """Wait up to `grace` s for `proc`'s session to end by itself, then SIGKILL what is left of it and of
    the leader's descendants; reap the leader. Returns "pid: command line" of every process killed."""
    # Descendants only while the leader is ours and unreaped: afterwards its pid may be someone else's.
    tree = descendants(proc.pid) if proc.poll() is None else []
    deadline = time.monotonic() + grace

    def left() -> set[int]:
        return set(session_processes(proc.pid)) | {p.pid for p in tree if alive(p)}

    while left() and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = sorted(left())
    names = describe(survivors)
    for pid in survivors:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    psutil.wait_procs([p for p in tree if p.pid in survivors], timeout=30)
    return names


def run_session(cmd: list[str], *, timeout: float, input: str | None = None, **popen_kwargs) -> subprocess.CompletedProcess:
    """Like ``subprocess.run(cmd, timeout=...)`` (pass capture_output/text/stdout/... as usual), but in a new
    session that is killed as a whole on timeout, on an interrupted test, and of leftovers at the end."""
    if popen_kwargs.pop("capture_output", False):
        popen_kwargs |= {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    check = popen_kwargs.pop("check", False)
    proc = start_session(cmd, stdin=subprocess.PIPE if input is not None else None, **popen_kwargs)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        killed = end_session(proc)
        out, err = proc.communicate()  # the pipes close once every writer is dead
        raise subprocess.TimeoutExpired(cmd, timeout, out, err) from RuntimeError(f"killed: {killed}")
    finally:
        end_session(proc)  # leftovers of a finished run, or everything if the test was interrupted
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check:
        result.check_returncode()
    return result
