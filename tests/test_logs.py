"""What a user reads while a run trains: train.log in the run directory (no bar frames), step lines
from the first step and at least every PRINT_EVERY_S seconds in a log file, the LR of the group that
trains, and train.log_with=tensorboard writing into the run's own tensorboard/ only."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator

from adpm_dist.config import load_config
from adpm_dist.runtime import tracking
from adpm_dist.runtime.optim import set_lr
from adpm_dist.runtime.tracking import LOG_NAME, RunLog, lr_text

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "digits_lt_tiny.yaml"


def _acc():
    return SimpleNamespace(is_main_process=True, log_with=None, print=print, is_local_main_process=True)


def test_train_log_gets_the_run_output_but_not_bar_frames(tmp_path, capsys):
    log = RunLog(_acc(), tmp_path, log_every=10, images_per_step=8, total_epochs=2)
    print("epoch 1/2 | elapsed 0s")
    sys.stderr.write("\rtraining:  50%|#####     |")
    print("warning: something", file=sys.stderr)
    log.close()
    text = (tmp_path / LOG_NAME).read_text()
    assert text.startswith("== ") and "started" in text.splitlines()[0]
    assert "epoch 1/2 | elapsed 0s\n" in text and "warning: something\n" in text and "50%" not in text
    assert "epoch 1/2" in capsys.readouterr().out  # the terminal still gets everything
    print("after close")
    assert "after close" not in (tmp_path / LOG_NAME).read_text()
    resumed = RunLog(_acc(), tmp_path, log_every=10, images_per_step=8, purge_step=7)
    resumed.close()
    assert "resumed at step 7" in (tmp_path / LOG_NAME).read_text().splitlines()[-1]  # appended


def test_step_lines_start_at_the_first_step_and_come_at_least_every_half_minute(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tracking, "interactive", lambda: False)
    clock = [0.0]
    monkeypatch.setattr(tracking.time, "perf_counter", lambda: clock[0])
    log = RunLog(_acc(), tmp_path, log_every=10, images_per_step=8)
    lrs = {"denoiser": 0.0, "prior": 1e-3}
    for step in range(1, 8):  # a slow epoch of 7 steps, 20 s each
        clock[0] += 20.0
        log.step(step, {"loss": 1.0}, lrs, f"epoch 1 batch {step}/7")
    log.close()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("step ")]
    assert [ln.split(" | ")[0] for ln in lines] == ["step 1", "step 3", "step 5", "step 7"]
    assert "lr denoiser 0.00e+00 prior 1.00e-03" in lines[0]


def test_the_lr_shown_is_the_group_that_trains():
    from adpm_dist.models import build_adpm
    from adpm_dist.runtime.optim import build_optimizer

    cfg = load_config(TINY, [])
    opt = build_optimizer(build_adpm(cfg, [30, 20, 10, 5, 5, 4, 3, 3, 2, 2]), cfg.train)
    assert set_lr(opt, cfg.train, -0.5) == cfg.train.prior_lr > 0  # prior warm-up: the prior's LR, not 0
    assert set_lr(opt, cfg.train, 0.5) == pytest.approx(cfg.train.lr * 0.5)  # joint: the denoiser's
    assert lr_text({"x": 0.5}) == "lr 5.00e-01"


def test_log_with_tensorboard_writes_only_the_runs_own_tree(tmp_path, capsys):
    acc = Accelerator(cpu=True, log_with=["tensorboard"], project_dir=str(tmp_path))
    log = RunLog(acc, tmp_path, log_every=1, images_per_step=8, tracker_config={"a": 1})
    log.scalars(1, {"loss": torch.tensor(1.0).item()}, "train/")
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LOG_NAME, "tensorboard"])
    assert "not to a second event tree" in capsys.readouterr().out


def test_a_launcher_that_already_logs_to_train_log_is_not_doubled(tmp_path):
    """A Ray trial's logs_to opens the run's train.log with a Path: the tee must recognise it."""
    import contextlib

    with open(tmp_path / LOG_NAME, "a", buffering=1) as f, contextlib.redirect_stdout(f):
        log = RunLog(_acc(), tmp_path, log_every=10, images_per_step=8)
        print("epoch 1/1 | once")
        log.close()
    assert (tmp_path / LOG_NAME).read_text().count("epoch 1/1 | once") == 1
