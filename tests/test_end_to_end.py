"""prepare -> accelerate launch launch/train.py -> metrics.json, on the tiny config (what README.md, "Train" promises)."""
from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import torch
import yaml
from process_group import run_session

from adpm_dist.runtime.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
METRIC_KEYS = {"accuracy", "macro_f1", "macro_precision", "macro_recall", "balanced_accuracy", "per_class"}


def launch_env(tmp_path: Path) -> dict:
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HOME": str(tmp_path / "hf")}


def test_prepare_train_evaluate(digits_shards, tmp_path):
    out = tmp_path / "run"
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "launch/train.py", "--config", "configs/digits_lt_tiny.yaml",
           f"data.shards={digits_shards}", f"run.output_dir={out}"]
    proc = run_session(cmd, cwd=ROOT, env=launch_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics) and METRIC_KEYS <= set(metrics["prior"])
    manifest = json.loads((digits_shards / "manifest.json").read_text())
    n_test = manifest["parts"]["test"]["num_samples"]
    assert metrics["n_samples"] == n_test == sum(c["support"] for c in metrics["per_class"].values())
    assert set(metrics["per_class"]) == set(manifest["class_names"])
    assert 0.0 <= metrics["macro_f1"] <= 1.0 and metrics["best_epoch"] >= 2  # selected after warm-up

    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n_test and len({r["key"] for r in rows}) == n_test
    probs = [float(v) for k, v in rows[0].items() if k.startswith("p_")]
    assert abs(sum(probs) - 1) < 1e-4

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["shards"] == str(digits_shards) and saved["model"]["hidden_dim"] == 64
    ckpt = load_checkpoint(out / "checkpoints" / "best.pt")
    assert ckpt["config"] == saved and isinstance(ckpt["model"]["levels"], torch.Tensor)


def test_unknown_key_fails_before_training(tmp_path):
    proc = run_session([sys.executable, "launch/train.py", "--config", "configs/digits_lt_tiny.yaml",
                        "train.epochz=3"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "train.epochz" in proc.stderr


def test_eval_part_must_exist(digits_shards, tmp_path):
    proc = run_session([sys.executable, "launch/train.py", "--config", "configs/digits_lt_tiny.yaml",
                        f"data.shards={digits_shards}", "data.eval_part=fold9", f"run.output_dir={tmp_path}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "fold9" in proc.stderr
