"""benchmarks/gpu_check.py runs end to end with --tiny on CPU, so that it cannot be broken when a
GPU finally runs it: every section is measured and both outputs name the device."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_tiny_runs_end_to_end(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    assert gpu_check.main(["--tiny", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["device"] and result["batch"] == 4
    models = {(r["model"], r["channels_last"], r["compile"]) for r in result["train"]}
    assert len(models) == 7 and all("images_per_s" in r and "peak_memory_gb" in r for r in result["train"])
    assert result["predict"]["predict_ratio"] > 0 and set(result["adam"]) == {"engine", "fused"}
    assert [(r["cache"], r["augment_on"]) for r in result["loader"]] == gpu_check.LOADER_SETTINGS
    table = (tmp_path / "gpu_check.md").read_text()
    assert result["device"] in table and ("GPU waits" in table or "keeps up" in table)
