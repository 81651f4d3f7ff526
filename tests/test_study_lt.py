"""benchmarks/study_lt.py's pure parts: which sets it knows and the verdict line it writes."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.study_lt import recipe_run_dir, set_kind, verdict  # noqa: E402


def test_sets_are_named_by_kind_and_imbalance_ratio():
    assert set_kind("digits_ir50") == ("digits", 50.0) and set_kind("photo_ir100") == ("photo", 100.0)
    with pytest.raises(SystemExit, match="cifar_ir10"):
        set_kind("cifar_ir10")


def test_verdict_says_whether_the_test_score_falls_inside_the_estimates_interval():
    rec = SimpleNamespace(name="logit_adjusted")
    report = {"recommendation": rec, "partial": [],
              "decisions": {"logit_adjusted": SimpleNamespace(estimate=0.82, low=0.79, high=0.85)}}
    assert "recipe on `test`: macro-F1 0.820, inside the interval" in verdict(report, {"macro_f1": 0.82})
    assert "outside the interval" in verdict(report, {"macro_f1": 0.60})
    assert "not been trained" in verdict(report, None)
    assert verdict({"recommendation": None, "partial": []}, None).startswith("No recommendation")


def test_a_changed_recipe_is_trained_in_its_own_run_directory(tmp_path):
    assert recipe_run_dir(tmp_path) is None
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "recipe.yaml").write_text("method: logit_adjusted\n")
    first = recipe_run_dir(tmp_path)
    assert first == recipe_run_dir(tmp_path) and first.parent == tmp_path / "recipe_runs"
    (tmp_path / "study" / "recipe.yaml").write_text("method: balanced_softmax\n")
    assert recipe_run_dir(tmp_path) != first
