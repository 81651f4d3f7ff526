"""Exact resume: a 2-rank DDP run SIGKILLed right after its first checkpoint (mid-epoch: step 3 of 6 in
the prior warm-up), relaunched with train.resume=auto, ends with the same metrics and training history
as the uninterrupted run with the same seed (tests/test_distributed.py's DDP run, same config: EMA on
and evaluated, a checkpoint every 3 steps). This needs the model, optimizer, LR position, EMA, every
RNG (global ones and the engine's generator for t/eps) and the data position to be restored.

The kill races the training: on a loaded machine the run may write another checkpoint (step 5, the end
of the epoch, or step 6) before SIGKILL lands. train.resume=auto must then continue from the latest
complete one, and the metrics must still match; the test checks exactly that instead of assuming
which checkpoint the race left (CI once failed here, on a busy machine, for that reason alone).
"""
from __future__ import annotations

import json
import time

from process_group import end_session
from test_distributed import TIMEOUT, TIMING_KEYS, run, start, train_cmd, trained

from adpm_dist.runtime.checkpoint import STATE_FILE, complete_checkpoints, load_checkpoint


def strip_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


def test_sigkill_after_first_checkpoint_then_resume_matches_uninterrupted(digits_shards, tmp_path, tmp_path_factory):
    out = tmp_path / "out"
    cmd = train_cmd("ddp", out, f"data.shards={digits_shards}")
    proc = start(cmd, tmp_path / "killed.log", tmp_path)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not complete_checkpoints(out / "checkpoints"):
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint before the timeout"
            time.sleep(0.05)
    finally:
        end_session(proc)  # SIGKILL to every process of the run: no chance to clean up or flush anything
    found = complete_checkpoints(out / "checkpoints")
    assert found and not (out / "metrics.json").exists(), found
    latest = found[-1]  # step 3 unless the run got further before the kill landed (see above)
    at = json.loads((latest / STATE_FILE).read_text())
    reference_dir, _ = trained("ddp", digits_shards, tmp_path_factory)
    reference = json.loads((reference_dir / "metrics.json").read_text())
    # n batches per epoch on every rank: step s is batch s % n of epoch s // n (step 3: epoch 0, batch 3)
    per_epoch = reference["history"][0]["step"]
    assert per_epoch > 3 and (at["epoch"], at["batch"]) == divmod(at["step"], per_epoch), (latest, at, per_epoch)

    rc = run(cmd + ["train.resume=auto"], tmp_path / "resumed.log", tmp_path)
    log = (tmp_path / "resumed.log").read_text()
    assert rc == 0, log[-4000:]
    assert f"resumed from {latest}: epoch {at['epoch'] + 1}, batch {at['batch']}, step {at['step']}" in log, \
        f"checkpoints left by the kill: {[p.name for p in found]}\n" + log[:3000]

    resumed = json.loads((out / "metrics.json").read_text())
    assert strip_timing(resumed.pop("history")) == strip_timing(reference.pop("history"))
    assert resumed == reference  # accuracy, macro-F1, per-class, prior metrics, best epoch: all identical
    best = load_checkpoint(out / "checkpoints" / "best.pt")
    assert {"model", "config", "epoch", "macro_f1", "class_names"} <= set(best) and best["ema"] is True
