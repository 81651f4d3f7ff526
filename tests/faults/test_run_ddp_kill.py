"""Fault suite, runs and outputs (docs/faults.md): SIGKILL of one rank of a 2-rank DDP run on gloo. The
other rank must not wait forever in a collective: the launch ends with an error within a bounded time,
and the checkpoint written before the kill is still complete (train.resume=auto can continue from it)."""
from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from process_group import end_session
from test_distributed import start, train_cmd

from adpm_dist.runtime.checkpoint import complete_checkpoints

pytestmark = pytest.mark.faults
BOUND = 120  # seconds the surviving rank and the launcher may take to give up


def rank_process(launcher: psutil.Process, rank: int) -> psutil.Process | None:
    for p in launcher.children(recursive=True):
        try:
            if p.environ().get("RANK") == str(rank) and "launch/train.py" in " ".join(p.cmdline()):
                return p
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def test_killing_one_ddp_rank_ends_the_run_within_a_bound(digits_shards, tmp_path):
    out = tmp_path / "out"
    proc = start(train_cmd("ddp", out, f"data.shards={digits_shards}"), tmp_path / "train.log", tmp_path)
    try:
        deadline = time.monotonic() + 400
        while not complete_checkpoints(out / "checkpoints"):
            assert proc.poll() is None, (tmp_path / "train.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint before the timeout"
            time.sleep(0.1)
        victim = rank_process(psutil.Process(proc.pid), 1)
        assert victim is not None
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        rc = proc.wait(timeout=BOUND)
        assert rc != 0 and time.monotonic() - killed_at < BOUND
    finally:
        end_session(proc)
    assert complete_checkpoints(out / "checkpoints") and not (out / "metrics.json").exists()
