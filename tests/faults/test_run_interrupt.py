"""Fault suite, runs and outputs (docs/faults.md): a run interrupted by SIGTERM (a scheduler preempting it)
or SIGINT (Ctrl-C) finishes its current step, saves a resumable checkpoint of that step, prints one line
with the command that resumes it and exits 143 / 130; under a 2-rank gloo launch every rank saves the
same step. train.resume=auto then continues from that checkpoint."""
from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from process_group import end_session
from test_distributed import start, train_cmd

from adpm_dist.runtime.checkpoint import STATE_FILE, complete_checkpoints

pytestmark = pytest.mark.faults


def wait_for(log: Path, pattern: str, proc, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, log.read_text(), re.M):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {pattern!r} before the timeout"
        time.sleep(0.1)


def interrupted(mode: str, out: Path, shards: Path, tmp: Path, sig: int) -> tuple[int, str]:
    """Start a run, send ``sig`` to the launcher (the process a scheduler or a terminal signals) after its
    third logged step, mid-epoch; its exit code and log."""
    log = tmp / f"{mode}.log"
    proc = start(train_cmd(mode, out, f"data.shards={shards}", "train.log_every=1"), log, tmp)
    try:
        wait_for(log, r"^step 3 ", proc)
        proc.send_signal(sig)
        rc = proc.wait(timeout=120)
    finally:
        end_session(proc)
    return rc, log.read_text()


def test_sigterm_mid_epoch_saves_that_step_and_resume_continues(digits_shards, tmp_path):
    out = tmp_path / "out"
    rc, text = interrupted("single", out, digits_shards, tmp_path, signal.SIGTERM)
    assert rc == 143, text[-3000:]
    [ckpt] = complete_checkpoints(out / "checkpoints")
    state = json.loads((ckpt / STATE_FILE).read_text())
    assert state["epoch"] == 0 and 3 <= state["batch"] == state["step"]  # mid-epoch 1, the step it stopped at
    line = [s for s in text.splitlines() if s.startswith("stopped by SIGTERM")]
    assert line == [f"stopped by SIGTERM at step {state['step']}; checkpoint {ckpt}; resume with: accelerate launch "
                    f"launch/train.py {line[0].split('launch/train.py ', 1)[1]}"] and line[0].endswith(" train.resume=auto")
    assert "Traceback" not in text and not (out / "metrics.json").exists() and not (out / "run.lock").exists()
    log = tmp_path / "resume.log"
    proc = start(train_cmd("single", out, f"data.shards={digits_shards}", "train.log_every=1", "train.resume=auto"),
                 log, tmp_path)
    try:
        assert proc.wait(timeout=540) == 0, log.read_text()[-3000:]
    finally:
        end_session(proc)
    assert f"resumed from {ckpt}: epoch 1, batch {state['batch']}" in log.read_text()
    assert (out / "metrics.json").is_file()


def test_sigint_saves_a_checkpoint_and_exits_130_without_a_traceback(digits_shards, tmp_path):
    out = tmp_path / "out"
    rc, text = interrupted("single", out, digits_shards, tmp_path, signal.SIGINT)
    assert rc == 130, text[-3000:]
    assert complete_checkpoints(out / "checkpoints") and "stopped by SIGINT" in text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text


def test_sigterm_to_a_2_rank_launch_saves_the_same_step_on_every_rank(digits_shards, tmp_path):
    out = tmp_path / "out"
    rc, text = interrupted("ddp", out, digits_shards, tmp_path, signal.SIGTERM)
    assert rc != 0, text[-3000:]
    [line] = [s for s in text.splitlines() if s.startswith("stopped by SIGTERM at step ")]  # rank 0's, once
    step = int(line.split()[5].rstrip(";"))
    ckpt = out / "checkpoints" / f"step_{step:08d}"
    assert ckpt in complete_checkpoints(out / "checkpoints"), text[-3000:]
    assert {p.name for p in ckpt.glob("rank*.pt")} == {"rank0.pt", "rank1.pt"}  # both ranks saved that step
    assert json.loads((ckpt / STATE_FILE).read_text())["world_size"] == 2 and "--num_processes 2" in line
    assert not (out / "metrics.json").exists()


def test_a_second_signal_stops_at_once_unless_it_is_the_same_interruption(monkeypatch, capsys):
    from adpm_dist.runtime import interrupt

    exits = []
    monkeypatch.setattr(interrupt.os, "_exit", exits.append)
    clock = iter([100.0, 100.5, 103.0])  # the first signal; the launcher forwarding it; a second one
    monkeypatch.setattr(interrupt.time, "monotonic", lambda: next(clock))
    stop = interrupt.StopRequest()
    stop.handle(signal.SIGINT, None)
    stop.handle(signal.SIGTERM, None)  # within SAME_EVENT_S: the same Ctrl-C, forwarded by torchrun
    assert stop.signum == signal.SIGINT and exits == []
    stop.handle(signal.SIGINT, None)
    assert exits == [130] and "stopping at once" in capsys.readouterr().err
