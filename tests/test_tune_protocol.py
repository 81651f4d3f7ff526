"""protocol.json on fold-only shards: nothing a reported figure was scored on helped choose it.

Planning is checked against the library's own data plan (data.plan.plan_data, what engine.train
reads) for every trial of a nested search; the Tune consolidator and benchmarks/quality.py write
protocol.json from stand-in finished runs on the `fold_only_shards` fixture (tests/test_tune_ray.py
runs a real nested search on it).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from adpm_dist.config import from_dict, load_config, save_config, to_dict
from adpm_dist.data.manifest import load_manifest
from adpm_dist.data.plan import plan_data
from adpm_dist.tune.consolidate import consolidate
from adpm_dist.tune.experiment import SearchSpec, trial_dir, write_search
from adpm_dist.tune.grid import GridSpec, plan_search
from adpm_dist.tune.protocol import overlapping_figures

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs/digits_lt_tiny.yaml")
CLASSES = ("head", "mid", "tail")


def fake_metrics(f1: float, eval_part: str) -> dict:
    per_class = {c: {"precision": f1, "recall": f1, "f1": f1, "support": 5} for c in CLASSES}
    block = {"accuracy": f1, "macro_f1": f1, "macro_precision": f1, "macro_recall": f1, "balanced_accuracy": f1,
             "n_samples": 15, "per_class": per_class}
    return block | {"prior": dict(block), "eval_part": eval_part, "best_epoch": 1, "val_macro_f1": f1,
                    "noise_levels": dict.fromkeys(CLASSES, 1.0), "train_counts": dict.fromkeys(CLASSES, 10)}


def assert_disjoint(figures: list[dict]) -> None:
    """Every figure: selected_on and evaluated_on disjoint (means: each component's)."""
    by_name = {f["figure"]: f for f in figures}
    assert figures and len(by_name) == len(figures)
    for f in figures:
        if "mean_of" in f:
            assert f["mean_of"] and all(n in by_name and "mean_of" not in by_name[n] for n in f["mean_of"]), f
        else:
            assert f["selected_on"] and f["evaluated_on"], f
            assert not set(f["selected_on"]) & set(f["evaluated_on"]), f
            assert not set(f["trained_on"]) & set(f["evaluated_on"]), f
        assert f["independent"], f
    assert overlapping_figures(figures) == []


def test_nested_trials_read_only_their_parts(fold_only_shards, tmp_path):
    """Every trial's data plan (as engine.train computes it): inner trials never see their outer fold."""
    spec = GridSpec(dataset="imagefolder", config=TINY, output=str(tmp_path / "exp"), alphas=[0, 0.5], betas=[5])
    search = plan_search(spec, fold_only_shards, 3, resume=False)
    assert search.protocol == "nested" and len(search.trials) == 2 * 3 + 2 * 3 * 2
    manifest = load_manifest(fold_only_shards)
    for trial in search.trials:
        plan = plan_data(manifest, from_dict(to_dict(search.config_of(trial))))
        assert plan.eval_part == f"fold{trial.fold}"
        assert plan.val_part is None and plan.num_val > 0  # checkpoint selection: a carve-out of the training folds
        hidden = {plan.eval_part} | ({f"fold{trial.outer}"} if trial.outer is not None else set())
        assert not hidden & set(plan.train_parts), (trial.id, plan.train_parts)
        assert sorted(plan.train_parts) == sorted(set(manifest.parts) - hidden)


def test_tune_protocol_json_on_fold_only_shards(fold_only_shards, tmp_path):
    spec = GridSpec(dataset="imagefolder", config=TINY, output=str(tmp_path / "exp"), alphas=[0, 0.5], betas=[5])
    search = plan_search(spec, fold_only_shards, 3, resume=False)
    write_search(search)
    for t in search.trials:  # inner scores favour alpha 1/2 for every outer fold
        d = trial_dir(search.out, t)
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(fake_metrics(0.5 + 0.1 * t.alpha + 0.01 * t.fold, t.eval_part)))
    report = consolidate(search.out)
    assert [o.choice.alpha for o in report["outer_folds"]] == [0.5, 0.5, 0.5]
    figures = json.loads((search.out / "protocol.json").read_text())
    assert_disjoint(figures)
    outer = [f for f in figures if "outer fold" in f["figure"] and "mean_of" not in f and "inner" not in f["figure"]]
    assert [f["evaluated_on"] for f in outer] == [["fold0"], ["fold1"], ["fold2"]]


def load_quality():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import quality

    return quality


def test_quality_runs_every_outer_fold_with_its_path_verbatim(fold_only_shards, tmp_path, monkeypatch):
    """benchmarks/quality.py --shards on fold-only shards at a path YAML would cut (" #", spaces, non-ASCII):
    one run per outer fold, each scored on its fold only; protocol.json disjoint. The Ray batch is replaced
    by a stand-in that writes what engine.train writes (the real path through Ray Tune is
    test_baselines.py::test_quality_script_smoke)."""
    quality = load_quality()
    shards = tmp_path / "data #2" / "plain ünï ✓"
    shutil.copytree(fold_only_shards, shards)
    launched = []

    def fake_execute(args, runs, out, show_eval=True) -> dict:
        for run in runs:  # each run's config as the trial gets it: plain typed values, no key=value text
            cfg = from_dict(run.config)
            plan = plan_data(load_manifest(cfg.data.shards), cfg)
            save_config(cfg, run.run_dir / "config.yaml")
            (run.run_dir / "metrics.json").write_text(json.dumps(fake_metrics(0.6, plan.eval_part)))
            launched.append((cfg.data.shards, plan.eval_part, plan.train_parts))
        return {run.id: "finished" for run in runs}

    monkeypatch.setattr(quality, "execute", fake_execute)
    out, results = tmp_path / "q #1", tmp_path / "RESULTS.md"
    assert quality.main(["--shards", str(shards), "--config", TINY, "--seeds", "0", "--methods", "ce",
                         "--baseline-epochs", "1", "--out", str(out), "--results", str(results),
                         "--csv", str(tmp_path / "runs.csv"), "--plot", ""]) == 0
    assert sorted(launched) == [(str(shards.resolve()), "fold0", ["fold1", "fold2"]),
                                (str(shards.resolve()), "fold1", ["fold0", "fold2"]),
                                (str(shards.resolve()), "fold2", ["fold0", "fold1"])]
    runs = out / "runs" / shards.name / "ce"
    assert sorted(d.name for d in runs.iterdir()) == ["seed0_fold0", "seed0_fold1", "seed0_fold2"]
    figures = json.loads((out / "protocol.json").read_text(encoding="utf-8"))
    assert_disjoint(figures)
    assert sorted(f["evaluated_on"][0] for f in figures if "mean_of" not in f) == ["fold0", "fold1", "fold2"]
    assert "once per outer fold" in results.read_text() and "| `ce` | cross-entropy | 3 |" in results.read_text()


def test_quality_keeps_one_run_with_a_test_part(digits_shards):
    quality = load_quality()
    assert quality.outer_folds(digits_shards) == [None]
    assert quality.run_name(2, None) == "seed2" and quality.run_name(2, "fold1") == "seed2_fold1"


@pytest.mark.parametrize("fold", [None, "fold1"])
def test_quality_launch_config_holds_typed_values(tmp_path, fold):
    quality = load_quality()
    args = quality.parse_args(["--config", TINY, "--baseline-epochs", "1", "train.batch_size=8"])
    run_dir = tmp_path / "r #1 ü" / "seed3"
    settings = quality.run_settings(tmp_path / "s #2", run_dir, 3, fold)
    path = run_dir / quality.LAUNCH_CONFIG
    quality.save_config(quality.resolved_config(args, quality.run_overrides(args, quality.METHODS, "ce"), settings), path)
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert cfg["data"]["shards"] == str(tmp_path / "s #2") and cfg["run"]["output_dir"] == str(run_dir)
    assert cfg["run"]["seed"] == 3 and cfg["method"] == "ce" and cfg["train"]["epochs"] == 1
    assert cfg["train"]["batch_size"] == 8  # the command's overrides still apply
    assert cfg["data"]["eval_part"] == (fold or "test")
