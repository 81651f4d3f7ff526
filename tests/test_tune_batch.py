"""tune/batch.py: a batch of named runs, the benchmarks' kind of study (no cluster here; the real path
through Ray Tune is test_baselines.py::test_quality_script_smoke)."""
from __future__ import annotations

from pathlib import Path

import pytest

from adpm_dist.config import load_config
from adpm_dist.tune.batch import RunBatch, batch_run, run_batch
from adpm_dist.tune.evaluator import kind_of

TINY = Path(__file__).resolve().parents[1] / "configs" / "digits_lt_tiny.yaml"


def test_a_batch_run_carries_its_typed_config_and_the_fields_every_trial_has(tmp_path):
    out = tmp_path / "runs #1" / "ce"
    run = batch_run("digits/ce/seed3", "digits ce", load_config(TINY, ["method=ce", "run.seed=3",
                                                                         f"run.output_dir={out}"]))
    assert run.id == "digits_ce_seed3" and run.run_dir == out  # a Tune trial name has no "/"
    info = run.to_dict()
    assert info["group"] == "digits ce" and info["seed"] == 3 and info["outer"] is None and info["fold"] == 0
    batch = RunBatch(tmp_path, [run])
    assert batch.config_of(run).run.output_dir == str(out) and batch.settings_of(run) == {"run.output_dir": str(out)}
    assert batch.manifest()["mode"] == "runs" and batch.total_epochs == load_config(TINY).train.epochs


def test_relative_output_dirs_and_repeated_ids_are_refused(tmp_path):
    with pytest.raises(ValueError, match="must be absolute"):
        batch_run("a", "g", load_config(TINY, ["run.output_dir=runs/relative"]))
    twice = [batch_run("a", "g", load_config(TINY, [f"run.output_dir={tmp_path / d}"])) for d in ("x", "y")]
    with pytest.raises(ValueError, match="unique"):
        run_batch(tmp_path, twice)
    assert run_batch(tmp_path, []) == {}


def test_every_search_mode_has_an_evaluator_and_an_unknown_one_is_named():
    for mode in ("grid", "fit", "study"):
        _, kind = kind_of({"mode": mode})
        assert callable(kind.reported_runs)
    with pytest.raises(ValueError, match="'runs' has no evaluator"):
        kind_of({"mode": "runs"})
