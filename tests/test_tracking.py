"""What a run logs: "epoch N/total", elapsed and ETA in plain logs, the warm-up in the header,
TensorBoard tags without a doubled prefix, and Accelerate's trackers (train.log_with) fed the same scalars."""
from __future__ import annotations

from pathlib import Path

import pytest
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker

from adpm_dist.config import ConfigError, load_config
from adpm_dist.methods.base import EpochPlan
from adpm_dist.runtime.engine import epochs_line
from adpm_dist.runtime.tracking import RunLog, duration, eta_seconds

ROOT = Path(__file__).resolve().parents[1]


class Recording(GeneralTracker):
    """An in-memory tracker: what W&B or MLflow would receive through Accelerator.log."""
    name, requires_logging_directory, main_process_only = "recording", False, True

    def __init__(self):
        super().__init__()
        self.config, self.logged = None, []

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values):
        self.config = values

    def log(self, values, step=None, **kwargs):
        self.logged.append((step, dict(values)))


def test_epoch_lines_tags_and_trackers(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = Recording()
    acc = Accelerator(cpu=True, log_with=[tracker])
    lines = []
    acc.print = lambda *a, **k: lines.append(" ".join(map(str, a)))
    log = RunLog(acc, tmp_path, log_every=1, images_per_step=32, total_epochs=6,
                 tracker_config={"train": {"epochs": 4, "log_with": ["recording"]}})
    history = []
    for epoch in (1, 2):
        history.append({"epoch": epoch, "phase": "joint", "loss": 1.0 / epoch, "step": 10 * epoch, "val_macro_f1": 0.5})
        log.epoch(history[-1], history)
    log.close()
    assert lines[0].startswith("epoch 1/6 | elapsed ") and " | ETA " in lines[0] and "epoch 2/6" in lines[1]
    tags = EventAccumulator(str(tmp_path / "tensorboard")).Reload().Tags()["scalars"]
    assert "val/macro_f1" in tags and "val/val_macro_f1" not in tags and "epoch/loss" in tags
    assert tracker.config == {"train.epochs": 4, "train.log_with": "['recording']"}
    assert (20, {"val/macro_f1": 0.5}) in tracker.logged


def test_eta_and_durations():
    assert eta_seconds(60.0, 2, 4) == 120.0 and duration(125) == "2m05s" and duration(3725) == "1h02m"
    assert duration(eta_seconds(1.0, 0, 3)) == "?"


def test_header_says_what_is_added_and_where_the_run_stops():
    from types import SimpleNamespace

    from adpm_dist.methods.staged import StagedPlan

    t = SimpleNamespace(epochs=4, stop_at_epoch=0)
    assert epochs_line(EpochPlan(2, 6), t) == ("epochs: 6 = 2 warm-up (train.prior_warmup_epochs, added) "
                                               "+ 4 (train.epochs)")
    assert epochs_line(EpochPlan(0, 4), t) == "epochs: 4 (train.epochs)"
    assert epochs_line(StagedPlan(0, 6, stage2=4), t) == ("epochs: 6 = 4 stage 1 (train.epochs) + 2 stage 2 "
                                                          "(baseline.stage2_epochs)")
    assert epochs_line(EpochPlan(0, 4), SimpleNamespace(epochs=4, stop_at_epoch=3)).endswith(
        "; stops after epoch 3 (train.stop_at_epoch), the LR schedule spanning all 4")


def test_log_with_names_are_checked(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())  # as if installed
    cfg = load_config(ROOT / "configs" / "digits_lt_tiny.yaml", ["train.log_with=[wandb,mlflow]"])
    assert cfg.train.log_with == ["wandb", "mlflow"]
    with pytest.raises(ConfigError, match="train.log_with: unknown tracker.*'wandbx'"):
        load_config(ROOT / "configs" / "digits_lt_tiny.yaml", ["train.log_with=[wandbx]"])
