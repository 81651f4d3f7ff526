"""Exact resume: a 2-rank run SIGKILLed right after a checkpoint (DDP in the prior warm-up; DDP with two
loader workers per rank and DeepSpeed ZeRO-2 mid-way through joint training), relaunched with
train.resume=auto, ends with the same metrics and training history as the uninterrupted run with the
same seed (tests/test_distributed.py's DDP run, same config: EMA on
and evaluated, a checkpoint every 3 steps). This needs the model, optimizer, LR position, EMA, every
RNG (global ones and the engine's generator for t/eps) and the data position to be restored.

The kill races the training: on a loaded machine the run may write another checkpoint (step 5, the end
of the epoch, or step 6) before SIGKILL lands. train.resume=auto must then continue from the latest
complete one, and the metrics must still match; the test checks exactly that instead of assuming
which checkpoint the race left (CI once failed here, on a busy machine, for that reason alone).
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from process_group import end_session
from test_distributed import TIMEOUT, TIMING_KEYS, run, start, train_cmd, trained

from adpm_dist.runtime.checkpoint import STATE_FILE, complete_checkpoints, load_checkpoint


def strip_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


def kill_at_checkpoint(cmd: list[str], out: Path, log: Path, tmp: Path, min_step: int) -> Path:
    """Start ``cmd``, SIGKILL its whole process group once a checkpoint at or after ``min_step``
    is complete; the latest complete checkpoint."""
    proc = start(cmd, log, tmp)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not [c for c in complete_checkpoints(out / "checkpoints") if int(c.name.split("_")[1]) >= min_step]:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint before the timeout"
            time.sleep(0.05)
    finally:
        end_session(proc)  # SIGKILL to every process of the run: no chance to clean up or flush anything
    found = complete_checkpoints(out / "checkpoints")
    assert found and not (out / "metrics.json").exists(), found
    return found[-1]


# (launch mode, loader workers, phase killed in): the warm-up with DDP; joint training with DDP and two
# DataLoader workers per rank, and with DeepSpeed ZeRO-2. Each resumed run must match the
# uninterrupted run of the same setting.
CASES = [("ddp", 0, "warm-up"), ("ddp", 2, "joint"), ("zero2", 0, "joint")]


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory) -> Path:
    """digits-LT in 64-sample shards: 2 ranks x 2 workers need at least 4 training shards."""
    from adpm_dist.data.prepare import prepare

    out = tmp_path_factory.mktemp("digits_64") / "shards"
    prepare("digits_lt", out, samples_per_shard=64, progress=False)
    return out


def reference_run(mode: str, workers: int, digits_shards: Path, small_shards: Path, tmp_path_factory) -> tuple[dict, Path]:
    """(metrics, shards) of the uninterrupted run to compare with: the shared run of the launch mode, or
    with loader workers an uninterrupted run with as many workers on the small shards (a training
    worker reads whole shards, so the worker count changes batches: it is part of the setting)."""
    if workers == 0:
        reference_dir, _ = trained(mode, digits_shards, tmp_path_factory)
        return json.loads((reference_dir / "metrics.json").read_text()), digits_shards
    tmp = tmp_path_factory.mktemp(f"reference_{mode}_w{workers}")
    rc = run(train_cmd(mode, tmp / "out", f"data.shards={small_shards}", f"data.num_workers={workers}"),
             tmp / "train.log", tmp)
    assert rc == 0, (tmp / "train.log").read_text()[-3000:]
    return json.loads((tmp / "out" / "metrics.json").read_text()), small_shards


@pytest.mark.parametrize("mode,workers,phase", CASES, ids=[f"{m}-w{w}-{p}" for m, w, p in CASES])
def test_sigkill_then_resume_matches_uninterrupted(mode, workers, phase, digits_shards, small_shards, tmp_path,
                                                   tmp_path_factory):
    reference, shards = reference_run(mode, workers, digits_shards, small_shards, tmp_path_factory)
    per_epoch = reference["history"][0]["step"]  # optimizer steps per epoch (the warm-up is epoch 1)
    # warm-up: the DDP run's own checkpoint every 3 steps; joint: mid-epoch 2 at a step this seed picks
    step = 3 if phase == "warm-up" else per_epoch + 1 + random.Random(20261202).randrange(per_epoch - 2)
    out = tmp_path / "out"
    cmd = train_cmd(mode, out, f"data.shards={shards}", f"data.num_workers={workers}",
                    f"train.checkpoint_every_steps={step}")
    latest = kill_at_checkpoint(cmd, out, tmp_path / "killed.log", tmp_path, step)
    at = json.loads((latest / STATE_FILE).read_text())
    # n batches per epoch on every rank: step s is batch s % n of epoch s // n (step 3: epoch 0, batch 3)
    assert per_epoch > 3 and (at["epoch"], at["batch"]) == divmod(at["step"], per_epoch), (latest, at, per_epoch)
    assert phase == "warm-up" or at["epoch"] >= 1, at  # joint: killed after the warm-up epoch

    rc = run(cmd + ["train.resume=auto"], tmp_path / "resumed.log", tmp_path)
    log = (tmp_path / "resumed.log").read_text()
    assert rc == 0, log[-4000:]
    assert f"resumed from {latest}: epoch {at['epoch'] + 1}, batch {at['batch']}, step {at['step']}" in log, log[:3000]

    resumed = json.loads((out / "metrics.json").read_text())
    assert strip_timing(resumed.pop("history")) == strip_timing(reference.pop("history"))
    for key in ("config_fingerprint", "code_version", "data_fingerprint", "resume_changes"):
        resumed.pop(key, None), reference.pop(key, None)  # checkpoint_every_steps, data.num_workers: no effect
    assert resumed == reference  # accuracy, macro-F1, per-class, prior metrics, selection: all identical
    best = load_checkpoint(out / "checkpoints" / "best.pt")
    assert {"model", "config", "epoch", "macro_f1", "class_names"} <= set(best) and best["ema"] is True
