"""A study on a synthetic experiment with known scores (no training, no Ray): plan, nested selection on
pooled out-of-fold predictions, leaderboard, recommendation, recipe, partial estimates, --resume checks."""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_tune_consolidate import TINY, fake_metrics

from adpm_dist.config import ConfigError, save_config
from adpm_dist.tune.experiment import SearchSpec, trial_dir, write_search
from adpm_dist.tune.study.plan import plan_study
from adpm_dist.tune.study.report import consolidate_study
from adpm_dist.tune.study.spec import build_candidates

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["head"] * 5 + ["mid"] * 3 + ["tail"]


def cli():
    spec = importlib.util.spec_from_file_location("study_cli", ROOT / "tune/study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def plan(tmp_path, space: dict, resume=False, overrides=("train.epochs=1",), parts=("fold0", "fold1", "fold2"),
         methods=("ce", "logit_adjusted", "adpm_isotropic"), seeds=(0,)):
    shards = tmp_path / "shards"
    shards.mkdir(exist_ok=True)
    (shards / "manifest.json").write_text(json.dumps({"parts": {p: {} for p in parts}}))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    candidates = build_candidates(list(methods), str(tmp_path / "space.yaml"))
    spec = SearchSpec(dataset="imagefolder", config=TINY, output=str(tmp_path / "study"),
                      overrides=list(overrides))
    return plan_study(spec, candidates, shards, 3, list(seeds), resume=resume)


def cv_score(t) -> float:
    base = {"ce": 0.50, "adpm_isotropic": 0.60, "logit_adjusted": 0.65 if t.point == "la_tau1" else 0.55}
    return base.get(t.candidate, 0.55) + (0.01 * t.fold if t.fold < 2 else -0.08 * (t.point == "la_tau1"))


def predictions(t) -> list[str]:
    """Inner trials: tau 1 right everywhere but for outer fold 2 (there tau 0.5 is). CV trials: ce misses the
    tail on every fold, logit_adjusted at tau 0.5 one mid image of fold 2, adpm_isotropic one of fold 0."""
    if t.outer is not None:
        return LABELS if (t.point == "la_tau1") == (t.outer != 2) else ["head"] * len(LABELS)
    preds = list(LABELS)
    if t.candidate == "ce":
        preds[-1] = "head"
    if (t.candidate, t.point, t.fold) in (("logit_adjusted", "la_tau0.5", 2), ("adpm_isotropic", "default", 0)):
        preds[5] = "head"
    return preds


@pytest.fixture()
def study(tmp_path):
    """logit_adjusted tau in {0.5, 1}: its inner CV prefers tau 1 for outer folds 0 and 1 (every prediction
    right) and tau 0.5 for outer fold 2; CV scores known (cv_score); cost: logit_adjusted 100 s/trial, the
    others 50 s."""
    s = plan(tmp_path, {"logit_adjusted": {"baseline.la_tau": [0.5, 1.0]}})
    write_search(s)
    for t in s.trials:
        write_trial(s, t)
    return s


def write_trial(s, t) -> None:
    """One finished trial of the synthetic study: metrics, config, predictions and cost, as Ray leaves them."""
    d = trial_dir(s.out, t)
    d.mkdir(parents=True)
    choices = {"epochs": {"value": 2 + t.fold, "source": "chosen on validation", "flag": None,
                          "rising_at_end": t.candidate == "ce", "fix": {"train.stop_at_epoch": 2 + t.fold}}}
    history = [{"epoch": 1, "macro_f1": 0.4}, {"epoch": 2, "macro_f1": 0.5 if t.candidate == "ce" else 0.4}]
    (d / "metrics.json").write_text(json.dumps(fake_metrics(cv_score(t), t.fold) | {
        "choices": choices, "selection": {"rule": "best", "epoch": 2, "history": history}}))
    save_config(s.config_of(t), d / "config.yaml")  # what --resume compares a finished trial with
    preds = predictions(t)
    rows = ["key,label,prediction"] + [f"f{t.fold}k{i},{y},{p}" for i, (y, p) in enumerate(zip(LABELS, preds))]
    (d / "predictions.csv").write_text("\n".join(rows) + "\n")
    wall = 100.0 if t.candidate == "logit_adjusted" else 50.0
    (d / "cost.json").write_text(json.dumps({"wall_s": wall, "cpus": 1, "gpus": 0, "attempts": 1, "processes": 1}))


def test_plan_is_conditional_and_nested(tmp_path):
    s = plan(tmp_path, {"logit_adjusted": {"baseline.la_tau": [0.5, 1.0]}})
    assert s.protocol == "nested"
    cv = [t for t in s.trials if t.outer is None]
    inner = [t for t in s.trials if t.outer is not None]
    assert len(cv) == 3 * (1 + 2 + 1)  # ce, la x 2 taus, isotropic: tau never multiplies the others
    assert {t.candidate for t in inner} == {"logit_adjusted"} and len(inner) == 3 * 2 * 2
    assert all(t.fold != t.outer and f"fold{t.outer}" not in t.train_folds(3) for t in inner)
    cfg = s.config_of(next(t for t in cv if t.candidate == "adpm_isotropic"))
    assert cfg.method == "adpm" and cfg.noise.alpha == 0.0 and cfg.data.eval_part == "fold0"


def test_study_answer(study, capsys):
    """logit_adjusted and adpm_isotropic err once each (outer fold 2, fold 0): equal estimates, the leader is
    the first listed; at the default margin 0.01 the study cannot call them equal (undecided, the leader is
    recommended, 'too small' said); at 0.2 it can, and the cheaper isotropic ADPM is recommended. ce misses
    every tail image: clearly worse."""
    report = consolidate_study(study.out)
    est = {e.name: e for e in report["estimates"]}
    la = est["logit_adjusted"]
    assert [la.selections[k].point for k in range(3)] == ["la_tau1", "la_tau1", "la_tau0.5"]
    outer = [0.65, 0.66, 0.55 - 0.0]  # fold 2 at tau 0.5: 0.55 (no -0.08: that is tau 1's)
    assert la.mean_std("macro_f1")[0] == pytest.approx(np.mean(outer))
    d = report["decisions"]
    assert report["leader"].name == "logit_adjusted"
    assert d["adpm_isotropic"].estimate == pytest.approx(d["logit_adjusted"].estimate) and d["ce"].estimate < 1.0
    assert d["adpm_isotropic"].verdict == "undecided" and d["ce"].verdict == "clearly worse"
    assert d["ce"].diff_high < -0.01 and d["ce"].low <= d["ce"].estimate <= d["ce"].high
    assert report["recommendation"].name == "logit_adjusted"
    assert any("too small to separate 1 candidate" in w for w in report["warnings"])
    assert any(w.startswith("under-trained: ce") and "(train.epochs)" in w for w in report["warnings"])
    assert not report["partial"]
    md = (study.out / "study.md").read_text()
    assert "**Recommendation: logit_adjusted**" in md and "it leads" in md and "outer fold 2: la_tau0.5" in md
    assert "cannot tell the leader from adpm_isotropic (undecided" in md  # the lead is no evidence against it
    assert "chance level" in md and "target class prior: balanced" in md
    with open(study.out / "leaderboard.csv") as f:
        rows = {r["candidate"]: r for r in csv.DictReader(f)}
    assert rows["ce"]["rank"] == "3" and rows["logit_adjusted"]["recommended"] == "yes"
    assert rows["ce"]["vs_reference"].startswith("+0.000")
    assert rows["logit_adjusted"]["optimistic"] == ""  # nested: the outer scores never chose their point
    assert float(rows["logit_adjusted"]["cpu_hours"]) == pytest.approx(18 * 100 / 3600)
    figures = json.loads((study.out / "protocol.json").read_text())
    assert figures and all(f["independent"] for f in figures)
    la0 = next(f for f in figures if f["figure"] == "study.md logit_adjusted: fold0 seed 0")
    assert "fold0" not in la0["selected_on"] and {"fold1", "fold2"} <= set(la0["selected_on"])
    assert (study.out / "leaderboard.png").stat().st_size > 0
    assert cli().main(["--dataset", "imagefolder", "--output", str(study.out), "--consolidate-only"]) == 0


def test_equal_and_cheaper_is_recommended_with_its_cv_choices_fixed(study):
    report = consolidate_study(study.out, equivalence=0.2)
    assert report["decisions"]["adpm_isotropic"].verdict == "equal"
    assert report["recommendation"].name == "adpm_isotropic"  # equal to the leader and half its cost per trial
    md = (study.out / "study.md").read_text()
    assert "**Recommendation: adpm_isotropic**" in md and "2.0x less per trial" in md and "equal to it within 0.2" in md
    text = (study.out / "recipe.yaml").read_text()
    recipe = yaml.safe_load(text)
    assert recipe["method"] == "adpm" and recipe["noise"]["alpha"] == 0.0
    # the CV trials kept epochs 2, 3, 4: the recipe stops at the lower median, on the trials' own schedule
    # (train.epochs unchanged), on everything, choosing nothing
    assert recipe["train"]["stop_at_epoch"] == 3 and recipe["train"]["select"] == "last"
    assert recipe["train"]["epochs"] == 1  # the base config's (plan(): train.epochs=1)
    assert recipe["data"]["val_part"] == "none" and "train.stop_at_epoch = 3 (trials: 2, 3, 4)" in text
    assert "NOT an estimate" in text  # fold-only shards


def test_target_prior_is_checked_before_anything_runs(study, tmp_path, capsys):
    (tmp_path / "w.yaml").write_text("head: 1\nmid: 1\n")
    args = ["--dataset", "imagefolder", "--output", str(study.out), "--consolidate-only"]
    assert cli().main(args + ["--target-prior", "uniform"]) == 2
    assert "--target-prior 'uniform'" in capsys.readouterr().err
    assert cli().main(args + ["--target-prior", str(tmp_path / "w.yaml")]) == 2
    assert "classes missing ['tail']" in capsys.readouterr().err
    assert cli().main(args + ["--target-prior", "train"]) == 0


def test_partial_estimate_exits_nonzero(study, capsys):
    (trial_dir(study.out, next(t for t in study.trials if t.candidate == "ce")) / "metrics.json").unlink()
    assert cli().main(["--dataset", "imagefolder", "--output", str(study.out), "--consolidate-only"]) == 1
    assert "PARTIAL ESTIMATE" in capsys.readouterr().err
    assert (study.out / "study.md").read_text().startswith("> **PARTIAL ESTIMATE") and "ce: 2/3" in \
        (study.out / "study.md").read_text()


def test_resume_refuses_a_changed_space_or_config(study, tmp_path):
    with pytest.raises(ValueError, match=r"logit_adjusted: space"):
        plan(tmp_path, {"logit_adjusted": {"baseline.la_tau": [0.5, 2.0]}}, resume=True)
    with pytest.raises(ValueError, match=r"train.epochs"):
        plan(tmp_path, {"logit_adjusted": {"baseline.la_tau": [0.5, 1.0]}}, resume=True, overrides=["train.epochs=2"])
    with pytest.raises(FileExistsError):
        plan(tmp_path, {"logit_adjusted": {"baseline.la_tau": [0.5, 1.0]}})
    again = plan(tmp_path, {"logit_adjusted": {"baseline.la_tau": [0.5, 1.0]}}, resume=True)
    assert again.todo == []  # every trial finished: nothing re-runs


def test_bad_candidates_are_named(tmp_path):
    with pytest.raises(ConfigError, match="'nope'"):
        build_candidates(["ce", "nope"])
    (tmp_path / "s.yaml").write_text("focal: {baseline.focal_gamma: 2}\n")
    with pytest.raises(ConfigError, match="focal.baseline.focal_gamma"):
        build_candidates(["focal"], str(tmp_path / "s.yaml"))
    (tmp_path / "t.yaml").write_text("ce: {}\n")
    with pytest.raises(ConfigError, match=r"\['ce'\] are not among"):
        build_candidates(["focal"], str(tmp_path / "t.yaml"))
    with pytest.raises(ConfigError, match="no_such"):
        plan(tmp_path, {"logit_adjusted": {"baseline.no_such": [1]}})


def test_early_stop_scope_without_early_stop_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        cli().parse_args(["--dataset", "digits_lt", "--early-stop-scope", "candidate"])
    assert exc.value.code == 2 and "--early-stop-scope needs --early-stop" in capsys.readouterr().err
    args = cli().parse_args(["--dataset", "digits_lt", "--early-stop", "--early-stop-scope", "candidate"])
    assert args.early_stop_scope == "candidate"


def test_under_trained_names_the_key_that_lengthens_the_validated_epochs():
    """A two-stage method validates in stage 2 only: more train.epochs would not lengthen what it validated,
    baseline.stage2_epochs would (Method.length_key)."""
    from adpm_dist.tune.study.answer import length_key_of
    from adpm_dist.tune.study.results import Estimate

    def runs(method):
        return Estimate(method, {}, {}, 3, 0.5, {}, recipe_runs=[{"method": method}] * 3)

    assert [length_key_of(runs(m)) for m in ("ce", "posthoc_la", "adpm", "crt", "mislas")] == \
        ["train.epochs"] * 3 + ["baseline.stage2_epochs"] * 2
    assert length_key_of(runs("not_registered_here")) == "train.epochs"

