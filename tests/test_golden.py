"""Golden-loss test: the tiny config's training losses (every step) and final metrics, pinned.

A refactor must not change numbers. If this fails after a change that is *meant* to change results
(a new default, a different draw order), regenerate the pins with
``python tests/test_golden.py`` and say why in the commit message.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "digits_lt_tiny.yaml"
PINS = Path(__file__).with_name("golden.json")
FIRST_STEPS = 80  # every step of the tiny runs (ADPM 39: warm-up and joint; a classifier 26)
METHODS = ("adpm", "logit_adjusted")


def run_tiny(method: str, shards: Path, out: Path) -> dict:
    """Train the tiny config in process; return the first step losses and the final figures."""
    from adpm_dist.config import load_config
    from adpm_dist.runtime import engine, tracking

    steps: list[float] = []
    original = tracking.RunLog.step

    def record(self, step, losses, lrs, where):
        steps.append(losses["loss"])
        return original(self, step, losses, lrs, where)

    tracking.RunLog.step = record
    try:
        cfg = load_config(TINY, [f"data.shards={shards}", f"run.output_dir={out}", f"method={method}"])
        metrics = engine.train(cfg)
    finally:
        tracking.RunLog.step = original
    return {
        "first_losses": steps[:FIRST_STEPS],
        "macro_f1": metrics["macro_f1"],
        "prior_macro_f1": metrics["prior"]["macro_f1"],
        "accuracy": metrics["accuracy"],
        "best_epoch": metrics["best_epoch"],
    }


@pytest.mark.parametrize("method", METHODS)
def test_tiny_run_matches_its_golden_numbers(method, digits_shards, tmp_path):
    pinned = json.loads(PINS.read_text())[method]
    got = run_tiny(method, digits_shards, tmp_path / method)
    assert got["first_losses"] == pytest.approx(pinned["first_losses"], rel=1e-5, abs=1e-6)
    for key in ("macro_f1", "prior_macro_f1", "accuracy"):
        assert got[key] == pytest.approx(pinned[key], abs=1e-6), key
    assert got["best_epoch"] == pinned["best_epoch"]


if __name__ == "__main__":  # regenerate the pins (see the module docstring)
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        shards = Path(tmp) / "shards"
        subprocess.run([sys.executable, "-m", "adpm_dist.data.prepare", "--dataset", "digits_lt", "--out",
                        str(shards)], check=True, capture_output=True, cwd=ROOT)
        pins = {m: run_tiny(m, shards, Path(tmp) / m) for m in METHODS}
    PINS.write_text(json.dumps(pins, indent=2) + "\n")
    print(json.dumps(pins, indent=2))
