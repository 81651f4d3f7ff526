"""--learning-curve (study/curve.py): the power law through the CV runs and their half runs, closed forms;
the half runs' configs; the consolidation's expected recipe score on a synthetic held-out study; and
data.train_share training on half the images."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_study import LABELS, plan, study, write_trial  # noqa: F401  (study: a fixture)
from test_tune_consolidate import TINY

from adpm_dist.config import load_config
from adpm_dist.tune.experiment import write_search
from adpm_dist.tune.study.curve import curve_config, curve_dir, curve_runs, power_law_score, share_half_runs
from adpm_dist.tune.study.report import consolidate_study

HELD_OUT = ("fold0", "fold1", "fold2", "test")


def test_power_law_through_two_points():
    """e 0.3 at 50 images, 0.2 at 100: b = ln 1.5 / ln 2, and doubling again multiplies the error by 2/3 (LC2)."""
    f, b = power_law_score(0.8, 0.7, 100, 50, 200)
    assert b == pytest.approx(math.log(1.5) / math.log(2))
    assert f == pytest.approx(1 - 0.2 * 2 / 3)
    assert power_law_score(0.8, 0.7, 100, 50, 100)[0] == pytest.approx(0.8)      # at the CV runs' images: theirs


def test_no_gain_when_the_half_runs_are_as_good_and_a_perfect_score_stays():
    assert power_law_score(0.8, 0.85, 100, 50, 176)[0] == pytest.approx(0.8)    # b clamped at 0
    assert power_law_score(1.0, 0.9, 100, 50, 176)[0] == pytest.approx(1.0)
    assert power_law_score(0.8, 1.0, 100, 50, 176)[0] == pytest.approx(0.8)     # a perfect half run: b undefined -> 0
    f, _ = power_law_score(np.array([0.8, 0.8]), np.array([0.7, 0.8]), 100, 50, 200)
    assert f.tolist() == pytest.approx([1 - 0.2 * 2 / 3, 0.8])                  # replicates broadcast


def test_half_runs_train_the_trials_config_on_half_the_images(tmp_path):
    study = plan(tmp_path, {}, parts=HELD_OUT)
    write_search(study)
    for t in study.trials:
        write_trial(study, t)
    report = consolidate_study(study.out)
    runs = curve_runs(study.out, json.loads((study.out / "search.json").read_text()), report["estimates"])
    assert len(runs) == 3 * 3                   # 3 candidates x 3 folds x 1 seed, every one complete
    cfg = curve_config(study.out, next(t for t in study.trials if t.candidate == "ce"))
    assert cfg.data.train_share == 0.5 and cfg.data.eval_part == "fold0" and cfg.method == "ce"
    assert cfg.run.output_dir.endswith("curve/ce_default_seed0_fold0") and not cfg.train.prefix_from
    assert not cfg.train.keep_validated and report["curves"] == []     # no half run yet: no section


def test_read_out_candidates_half_runs_are_replayed_over_ces(tmp_path):
    """As in the study: posthoc_la's and tau_norm's half runs train exactly ce's half run of the same fold and
    seed, so only ce's trains (keeping its validated weights) and theirs are replayed over it."""
    study = plan(tmp_path, {}, parts=HELD_OUT, methods=("ce", "posthoc_la", "tau_norm", "logit_adjusted"))
    write_search(study)
    for t in study.trials:
        write_trial(study, t)
    report = consolidate_study(study.out)
    runs = curve_runs(study.out, json.loads((study.out / "search.json").read_text()), report["estimates"])
    train, replays = share_half_runs(runs)
    assert sorted({r.group for r in train}) == ["ce", "logit_adjusted"] and len(train) == 2 * 3
    assert all(r.config["train"]["keep_validated"] == (r.group == "ce") for r in train)
    assert sorted((j.id, j.source.name) for j in replays) == sorted(
        (f"{m}_default_seed0_fold{k}", f"ce_default_seed0_fold{k}") for m in ("posthoc_la", "tau_norm") for k in range(3))
    assert all(j.out == curve_dir(study.out, next(t for t in study.trials if t.id == j.id)) for j in replays)
    assert all(j.cfg.data.train_share == 0.5 for j in replays)


def test_learning_curves_need_a_test_part(tmp_path):
    study = plan(tmp_path, {})
    write_search(study)
    with pytest.raises(ValueError, match="`test` part"):
        curve_runs(study.out, json.loads((study.out / "search.json").read_text()), [])


def write_half(study, t, misses: int) -> None:
    """Trial t trained on 14 images (2 folds of 9 less a carve-out of 4), its finished half run on 7, with
    `misses` more head images wrong."""
    metrics = study.out / "trials" / t.id / "metrics.json"
    metrics.write_text(json.dumps(json.loads(metrics.read_text()) | {"train_counts": {"head": 8, "mid": 4, "tail": 2}}))
    d = curve_dir(study.out, t)
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"train_counts": {"head": 4, "mid": 2, "tail": 1}}))
    src = (study.out / "trials" / t.id / "predictions.csv").read_text().splitlines()
    rows = [src[0]] + [line if i >= misses or not line.split(",")[1] == "head" else
                       ",".join(line.split(",")[:2] + ["mid"]) for i, line in enumerate(src[1:])]
    (d / "predictions.csv").write_text("\n".join(rows) + "\n")


def test_the_consolidation_extrapolates_each_candidate_to_the_recipes_images(tmp_path):
    study = plan(tmp_path, {}, parts=HELD_OUT)
    write_search(study)
    for t in study.trials:
        write_trial(study, t)
        write_half(study, t, misses=2 if t.candidate == "ce" else 0)
    report = consolidate_study(study.out)
    curves = {c.name: c for c in report["curves"]}
    assert set(curves) == {"ce", "logit_adjusted", "adpm_isotropic"}
    ce = curves["ce"]
    assert ce.n_cv == 14 and ce.n_half == 7 and ce.n_recipe == 3 * len(LABELS)
    assert ce.half < ce.cv and ce.exponent > 0 and ce.recipe > ce.cv
    assert ce.recipe == pytest.approx(power_law_score(ce.cv, ce.half, 14, 7, ce.n_recipe)[0])
    assert ce.low <= ce.recipe <= ce.high
    same = curves["logit_adjusted"]
    assert same.exponent == 0 and same.recipe == pytest.approx(same.cv)     # no gain seen, none read
    md = (study.out / "study.md").read_text()
    assert "## The recipe's expected score (learning curve)" in md
    rec = curves[report["recommendation"].name]
    assert f"is expected to score macro-F1 **{rec.recipe:.3f} [{rec.low:.3f}, {rec.high:.3f}]**" in md
    assert json.loads((study.out / "curve.json").read_text())[0]["name"] in curves


def test_train_share_trains_on_half_the_images(digits_shards, tmp_path, capsys):
    from adpm_dist.runtime.engine import train

    cfg = load_config(TINY, [f"data.shards={digits_shards}", f"run.output_dir={tmp_path / 'half'}", "method=ce",
                             "train.epochs=1", "data.train_share=0.5"])
    train(cfg)
    counts = json.loads((tmp_path / "half" / "metrics.json").read_text())["train_counts"]
    full = json.loads((digits_shards / "manifest.json").read_text())["counts"]["train"]
    assert counts == {c: max(1, round(n / 2)) for c, n in full.items()}
    assert "left out by data.train_share" in capsys.readouterr().out


def test_the_cli_refuses_a_learning_curve_under_nested_cv_before_any_trial(study, tmp_path, monkeypatch, capsys):  # noqa: F811
    import adpm_dist.tune.search as search
    from adpm_dist.tune.search import Resources
    from test_study import cli

    monkeypatch.setattr(search, "resources_and_shards", lambda args, output, base: (Resources(), tmp_path / "shards", 3))
    monkeypatch.setattr(search, "run_search", lambda *a, **k: pytest.fail("a trial started"))
    (tmp_path / "space.yaml").write_text("logit_adjusted: {baseline.la_tau: [0.5, 1.0]}\n")
    code = cli().main(["--dataset", "imagefolder", "--config", TINY, "--output", str(study.out), "--resume",
                       "--methods", "ce,logit_adjusted,adpm_isotropic", "--space", str(tmp_path / "space.yaml"),
                       "--learning-curve", "train.epochs=1"])
    assert code == 2 and "need a `test` part" in capsys.readouterr().err
