"""Conventions a new user brings: the launcher's --mixed_precision is never silently ignored, the
resolved config prints without training, an image-folder template exists for tune/search_noise.py,
and a missing optional dependency names the extra to install."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from adpm_dist.config import load_config
from adpm_dist.runtime.distributed import launcher_precision_conflict

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "digits_lt_tiny.yaml")


def _train_main():
    sys.path.insert(0, str(ROOT / "launch"))
    try:
        from train import main
    finally:
        sys.path.pop(0)
    return main


def test_launcher_precision_is_honoured_or_refused(capsys, monkeypatch):
    cfg = load_config(TINY)
    assert launcher_precision_conflict(cfg.train, {}) is None
    assert launcher_precision_conflict(cfg.train, {"ACCELERATE_MIXED_PRECISION": "no"}) is None
    assert "train.mixed_precision=bf16" in launcher_precision_conflict(cfg.train, {"ACCELERATE_MIXED_PRECISION": "bf16"})
    bf16 = load_config(TINY, ["train.mixed_precision=bf16"])
    assert launcher_precision_conflict(bf16.train, {"ACCELERATE_MIXED_PRECISION": "bf16"}) is None
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # accelerate launch --mixed_precision bf16
    assert _train_main()(["--config", TINY, "run.output_dir=/nonexistent/never"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.mixed_precision" in err and "bf16" in err


def test_print_config_resolves_without_running(capsys, tmp_path):
    out = tmp_path / "never"
    assert _train_main()(["--config", TINY, "train.epochs=3", f"run.output_dir={out}", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["epochs"] == 3 and printed["model"]["backbone"] == "test_resnet" and not out.exists()


def test_imagefolder_template_is_what_search_noise_reads():
    sys.path.insert(0, str(ROOT / "tune"))
    try:
        from search_noise import resolve_config
    finally:
        sys.path.pop(0)
    path = resolve_config(None, "imagefolder") if Path.cwd() == ROOT else ROOT / "configs" / "imagefolder.yaml"
    cfg = load_config(path)
    assert cfg.data.shards == "data/imagefolder" and cfg.data.eval_part == "fold0"


def test_missing_extra_is_named(monkeypatch):
    from adpm_dist import extras

    real = importlib.util.find_spec
    monkeypatch.setattr(extras.importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(extras.MissingExtra, match=r"pip install 'adpm-dist\[tune\]'"):
        extras.require("ray", "tune/search_noise.py")
    extras.require("deepspeed" if real("deepspeed") else "psutil", "x") if real("psutil") else None
