"""A tiny study on a real (loopback) Ray cluster: nested CV on fold-only shards, and the recipe trained by
launch/train.py (refit); --resume is checked without a cluster in test_study.py. Each process in its own session (conftest)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from process_group import run_session
from test_tune_ray import ROOT, ray_env, ray_tmp, run_search  # noqa: F401  (ray_tmp: a fixture)

from adpm_dist.config import load_config

pytestmark = pytest.mark.timeout(420)
FAST = ["train.epochs=1", "train.warmup_epochs=1", "train.val_every=1"]


def test_tiny_study_nested_resume_and_recipe(tmp_path, ray_tmp, fold_only_shards):  # noqa: F811
    """ce (nothing to tune) and logit_adjusted (tau in {0.5, 1}) x 3 folds: 3 + 6 CV trials and 12 inner
    trials for logit_adjusted only; every trial trains without its evaluation fold (and its outer fold).
    Run with --race on the real cluster: one wave per outer fold (the first two in one batch), each trial run or
    raced out, exit 0."""
    out = tmp_path / "study"
    (tmp_path / "space.yaml").write_text("logit_adjusted: {baseline.la_tau: [0.5, 1.0]}\nce: {}\n")
    cmd = [sys.executable, "tune/study.py", "--dataset", "imagefolder", "--shards", str(fold_only_shards),
           "--methods", "ce,logit_adjusted", "--space", str(tmp_path / "space.yaml"), "--output", str(out),
           "--config", "configs/digits_lt_tiny.yaml", "--progress-interval", "30", "--ray-temp-dir", str(ray_tmp),
           "--race", *FAST]
    res = run_search(cmd, ray_env(tmp_path), timeout=360)
    assert res.returncode == 0, res.stdout[-4000:]
    # outer folds 0-1 in one batch (no look between them), the look, then outer fold 2
    assert "race: seed 0, folds 0-1 (14 trials; 21 in the study)" in res.stdout, res.stdout[-4000:]
    assert "race: seed 0, fold 2 (" in res.stdout, res.stdout[-4000:]
    assert "recommendation:" in res.stdout and "PARTIAL" not in (out / "study.md").read_text()
    raced = json.loads((out / "raced.json").read_text()) if (out / "raced.json").is_file() else {}
    planned = json.loads((out / "search.json").read_text())["trials"]
    assert len(planned) == 21 and all((out / "trials" / t["id"] / "metrics.json").is_file() or t["candidate"] in raced
                                      for t in planned)
    for trial in (out / "trials").iterdir():
        cfg = load_config(trial / "config.yaml")
        metrics = json.loads((trial / "metrics.json").read_text())
        hidden = {metrics["eval_part"]} | ({f"fold{trial.name[5]}"} if trial.name.startswith("outer") else set())
        assert not hidden & set(cfg.data.train_parts), trial.name
        assert (trial / "predictions.csv").is_file() and (trial / "cost.json").is_file()
    assert {t.name.split("_", 2)[1] for t in (out / "trials").iterdir() if t.name.startswith("outer")} == {"logit"}
    assert all(f["independent"] for f in json.loads((out / "protocol.json").read_text()))
    assert "nested CV" in (out / "study.md").read_text()


    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    # the CV's choices fixed, nothing re-chosen: the trials' kept epoch count, no validation, the last epoch
    assert recipe["train"]["select"] == "last" and recipe["data"]["val_part"] == "none"
    assert recipe["data"]["train_parts"] == [] and 1 <= recipe["train"]["epochs"] <= 2  # fold-only: all but fold0
    run = run_session([sys.executable, "launch/train.py", "--config", str(out / "recipe.yaml")], cwd=ROOT,
                      capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    metrics = json.loads((Path(recipe["run"]["output_dir"]) / "metrics.json").read_text())
    assert metrics["method"] == recipe["method"] and metrics["eval_part"] == "fold0"


def test_ctrl_c_stops_the_study_cleanly_with_the_resume_command(tmp_path, ray_tmp, fold_only_shards):  # noqa: F811
    """Ctrl-C as a terminal sends it (SIGINT to the whole process group) while trials train: exit 130, one line
    with the --resume command, no traceback, no Tuner.restore hint, the trials' checkpoints kept (~60 s)."""
    import os
    import signal
    import subprocess
    import time

    from process_group import end_session, start_session

    out = tmp_path / "study"
    cmd = [sys.executable, "tune/study.py", "--dataset", "imagefolder", "--shards", str(fold_only_shards),
           "--methods", "ce", "--output", str(out), "--config", "configs/digits_lt_tiny.yaml", "--max-concurrent", "2",
           "--progress-interval", "60", "--ray-temp-dir", str(ray_tmp), "train.epochs=500", "train.val_every=50"]
    proc = start_session(cmd, cwd=ROOT, env=ray_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "started" in line:
                break
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(out.glob("trials/*/checkpoints/step_*")):
            time.sleep(1)
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        left = end_session(proc, grace=10)
    text = "".join(lines) + rest
    assert proc.returncode == 130, text[-3000:]
    assert "continue with python tune/study.py" in text and "--resume" in text, text[-3000:]
    assert "Traceback" not in text and "Tuner.restore" not in text and "Failed to fetch" not in text, text[-3000:]
    assert list(out.glob("trials/*/checkpoints/step_*")) and not left, left
