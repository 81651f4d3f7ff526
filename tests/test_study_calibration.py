"""benchmarks/study_calibration.py's pure parts and benchmarks/shapes_lt.py's generator (no training)."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import shapes_lt
from benchmarks.study_calibration import DRAWS, draw_row, parse_draw, summary
from adpm_dist.tune.study.compare import Decision


def test_draws_cover_three_kinds_and_three_ratios_on_unseen_seeds():
    assert len(DRAWS) >= 12
    kinds = {parse_draw(d)[0] for d in DRAWS}
    assert kinds == {"digits", "photo", "shapes"} and {parse_draw(d)[1] for d in DRAWS} == {10.0, 50.0, 100.0}
    assert all(parse_draw(d)[2] != 0 for d in DRAWS)  # seed 0 built the study; never drawn here
    with pytest.raises(SystemExit, match="cifar"):
        parse_draw("cifar_ir10_s1")


def _estimate(name, folds_scores, hours):
    comps = {(k, 0): {"macro_f1": v} for k, v in enumerate(folds_scores)}
    return SimpleNamespace(name=name, complete=True, components=comps, cost={"trials": 3, "cpu_hours": hours * 3},
                           values=lambda key, c=comps: {k: m[key] for k, m in c.items()},
                           mean_std=lambda key, c=comps: (float(np.mean([m[key] for m in c.values()])), 0.0))


def test_a_draw_scores_both_rules_against_every_recipe():
    """New rule recommends la (the leader); the old rule's fold means make ce lead: regret by hand."""
    est = [_estimate("ce", [0.70, 0.71, 0.72], 0.01), _estimate("la", [0.60, 0.90, 0.50], 0.02)]
    decisions = {"ce": Decision(0.60, 0.55, 0.65, 0.6, verdict="clearly worse", diff=-0.2, diff_low=-0.3, diff_high=-0.1),
                 "la": Decision(0.80, 0.75, 0.85, 0.8, verdict="leader")}
    report = {"estimates": est, "recommendation": est[1], "decisions": decisions}
    row = draw_row("digits_ir50_s1", report, {"ce": 0.62, "la": 0.83})
    assert row["new_rec"] == "la" and row["new_regret"] == 0 and row["new_covered"]
    assert row["old_rec"] == "ce" and row["old_regret"] == pytest.approx(0.21) and not row["old_covered"]
    assert row["new_best_in_equals"] and row["old_best_in_equals"] and row["new_best_kept"]  # la "tied" by its noisy folds, yet passed over
    assert draw_row("x", report, {"la": 0.83}) is None  # a recipe not trained yet: the draw is pending
    assert not row["under_trained"] and row["new_cv_models"] is None
    with_cv = draw_row("x", report, {"ce": 0.62, "la": 0.83}, cv_models={"la": 0.78})  # in [0.75, 0.85]
    assert with_cv["new_cv_models"] == 0.78
    warned = draw_row("x", report | {"warnings": ["under-trained: la still improved ..."]}, {"ce": 0.62, "la": 0.83})
    assert warned["under_trained"]
    s = summary([row, row | {"new_regret": 0.02, "new_covered": False, "under_trained": True}])
    assert s["new"]["median_regret"] == pytest.approx(0.01) and s["new"]["max_regret"] == pytest.approx(0.02)
    assert s["new"]["covered"] == 1 and s["old"]["covered"] == 0 and math.isnan(s["new"]["mean_spearman"])
    assert s["new_quiet"]["draws"] == 1 and s["new_quiet"]["max_regret"] == 0 and s["new_quiet"]["covered"] == 1
    s = summary([with_cv, with_cv | {"new_cv_models": 0.70}, row])
    assert (s["new"]["cv_models_covered"], s["new"]["cv_models_scored"]) == (1, 2)


def test_the_learning_curve_columns_score_the_expected_recipe_and_its_own_pick():
    """la recommended, its expected recipe score [0.80, 0.90] holds its test 0.83; the highest expected
    recipe score is ce's (0.95), whose recipe scored 0.62: regret 0.21."""
    from benchmarks.calibration_curve import curve_section
    from adpm_dist.tune.study.curve import Curve

    est = [_estimate("ce", [0.70, 0.71, 0.72], 0.01), _estimate("la", [0.60, 0.90, 0.50], 0.02)]
    decisions = {"ce": Decision(0.60, 0.55, 0.65, 0.6, verdict="clearly worse"), "la": Decision(0.80, 0.75, 0.85, 0.8,
                                                                                              verdict="leader")}
    curves = [Curve("ce", 14, 7, 27, 0.6, 0.5, 0.3, 0.95, 0.9, 0.99), Curve("la", 14, 7, 27, 0.8, 0.8, 0.0, 0.85, 0.8, 0.9)]
    report = {"estimates": est, "recommendation": est[1], "decisions": decisions, "curves": curves}
    row = draw_row("x", report, {"ce": 0.62, "la": 0.83})
    assert row["curve_covered"] and row["curve_interval"] == (0.8, 0.9) and row["curve_estimate"] == 0.85
    assert row["curve_rec"] == "ce" and row["curve_regret"] == pytest.approx(0.21) and row["curve_all"]
    text = "\n".join(curve_section([row, row | {"curve_covered": False}]))
    assert "held its recipe's test score in 1/2" in text and "max 0.210" in text
    plain = draw_row("x", report | {"curves": []}, {"ce": 0.62, "la": 0.83})
    assert "curve_interval" not in plain and curve_section([plain]) == []


def test_the_cv_models_score_pools_each_trials_test_predictions_once(digits_shards, tmp_path, monkeypatch):
    """cv_model_scores: the candidate's CV trials only (not another candidate sharing its name's prefix, not
    an outer trial), each predicting the whole `test` part (labels from the shard), confusions averaged over
    trials under the balanced prior, cached in cv_models.json (a second call predicts nothing)."""
    import json

    import adpm_dist.predict as predict
    from adpm_dist.tune.study import target
    from benchmarks import cv_model_scores

    where = tmp_path / "draw"
    where.mkdir()
    (where / "shards").symlink_to(digits_shards)
    trials = [{"id": f"{c}_p_seed0_fold{f}", "candidate": c, "outer": o, "point": "p"}
              for c, o in (("adpm", None), ("adpm_adjusted_chain", None)) for f in range(3)]
    trials.append({"id": "adpm_p_seed0_fold0_outer1", "candidate": "adpm", "outer": 1, "point": "p"})
    for t in trials:
        (where / "study" / "trials" / t["id"] / "checkpoints").mkdir(parents=True)
        (where / "study" / "trials" / t["id"] / "checkpoints" / "best.pt").write_bytes(b"")
    (where / "study" / "search.json").write_text(json.dumps({"trials": trials}))
    names = [str(i) for i in range(10)]
    seen = []

    def fake_load(run, device):
        seen.append(Path(run).name)
        return SimpleNamespace(class_names=names, fold=int(Path(run).name[-1]))

    def fake_predict(loaded, paths, batch_size):  # fold f's model calls label 0 "1" when f == 0, else right
        files = sorted(Path(paths[0]).rglob("*.*"))
        wrong = lambda y: "1" if (loaded.fold == 0 and y == 0) else str(y)  # noqa: E731
        return [{"path": str(f), "error": "", "prediction": wrong(int(f.parent.name))} for f in files]

    monkeypatch.setattr(predict, "load_model", fake_load)
    monkeypatch.setattr(predict, "predict_images", fake_predict)
    got = cv_model_scores.cv_models_scores(where, ["adpm"])
    assert sorted(seen) == [f"adpm_p_seed0_fold{f}" for f in range(3)]
    labels = np.array([int(json.loads(s["json"])["label"]) for s in _test_samples(digits_shards)])
    c = sum(target.confusions(labels, np.where((labels == 0) & (f == 0), 1, labels), 10) for f in range(3)) / 3
    assert got["adpm"] == pytest.approx(float(target.prior_scores(c, np.full(10, 0.1))["macro_f1"]))
    assert 0.9 < got["adpm"] < 1.0
    monkeypatch.setattr(predict, "load_model", lambda *a: pytest.fail("cached: nothing to predict"))
    assert cv_model_scores.cv_models_scores(where, ["adpm"]) == got
    (where / "study" / "trials" / "adpm_adjusted_chain_p_seed0_fold1" / "checkpoints" / "best.pt").unlink()
    with pytest.raises(FileNotFoundError, match="adpm_adjusted_chain_p_seed0_fold1"):  # never a score of fewer models
        cv_model_scores.cv_models_scores(where, ["adpm_adjusted_chain"])


def _test_samples(shards):
    from adpm_dist.data.stream import read_shard

    return [s for shard in sorted(shards.glob("test-*.tar")) for s in read_shard(shard)]


def test_shapes_lt_is_long_tailed_seeded_and_reproducible(tmp_path):
    a = shapes_lt.build(tmp_path / "a", ir=20, n_max=20, test_per_class=2, size=16, seed=3)
    b = shapes_lt.build(tmp_path / "b", ir=20, n_max=20, test_per_class=2, size=16, seed=3)
    assert a["counts"] == b["counts"] and max(a["counts"].values()) == 20 and min(a["counts"].values()) == 1
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == sum(a["counts"].values()) + 2 * len(shapes_lt.CLASSES)
    digest = lambda root: hashlib.sha256(b"".join((root / f).read_bytes() for f in files)).hexdigest()  # noqa: E731
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    with pytest.raises(FileExistsError):
        shapes_lt.build(tmp_path / "a")


def test_the_prediction_interval_adds_the_test_parts_own_spread(tmp_path):
    """widened: each side combined in quadrature with z x the test spread (closed form); test_spread: 0 for a
    recipe right on every test image, and about sqrt(p(1-p)/n)-sized for one wrong on a fraction p."""
    from benchmarks.recipe_scores import test_spread, widened

    lo, hi = widened((0.80, 0.86), 0.84, 0.0)
    assert (lo, hi) == pytest.approx((0.80, 0.86))
    lo, hi = widened((0.80, 0.86), 0.84, 0.01)
    assert lo == pytest.approx(0.84 - math.hypot(0.04, 0.0196), rel=1e-4)
    assert hi == pytest.approx(0.84 + math.hypot(0.02, 0.0196), rel=1e-4)

    def run(name, wrong):
        d = tmp_path / name
        d.mkdir()
        (d / "metrics.json").write_text('{"per_class": {"a": {}, "b": {}}}')
        rows = ["key,label,prediction"] + [f"k{i},{y},{'b' if y == 'a' and i < wrong else y}"
                                           for i, y in enumerate(["a"] * 100 + ["b"] * 100)]
        (d / "predictions.csv").write_text("\n".join(rows) + "\n")
        return d

    assert test_spread(run("right", 0)) < 0.01     # only Jeffreys' half image wrong per class moves it
    assert 0.005 < test_spread(run("some_wrong", 10)) < 0.05


def test_the_recipe_seeds_read_regret_on_the_mean_and_the_one_run_floor():
    """Two candidates, three training seeds, by hand: a leads on seeds 0 and 2, b on seed 1. Recommending b:
    regret per seed 0.04, 0, 0.02; on the means (a 0.82, b 0.81) 0.01; a perfect pick on seed 1 (b) judged on
    seed 0 loses 0.04, the floor; a, the right answer, loses 0.03 on seed 1."""
    from benchmarks.recipe_seeds import seed_fields, seed_section

    by_seed = {0: {"a": 0.84, "b": 0.80}, 1: {"a": 0.78, "b": 0.81}, 2: {"a": 0.84, "b": 0.82, "c": 0.99}}
    f = seed_fields("b", by_seed)  # c, scored at one seed only, does not count
    assert f["seed_count"] == 3 and set(f["seed_mean"]) == {"a", "b"} and f["seed_best"] == "a"
    assert f["seed_mean"]["a"] == pytest.approx(0.82) and f["seed_regret"] == pytest.approx(0.01)
    assert f["seed_regrets"] == pytest.approx([0.04, 0.0, 0.02]) and f["seed_floor"] == pytest.approx(0.04)
    assert f["seed_best_regrets"] == pytest.approx([0.0, 0.03, 0.0])  # a, the best on the mean, loses seed 1
    assert f["seed_best_by_seed"] == ["a", "b", "a"] and f["seed_rec_scores"] == [0.80, 0.81, 0.82]
    assert f["seed_sd"]["b"] == pytest.approx(np.std([0.80, 0.81, 0.82], ddof=1))
    assert seed_fields("b", {0: by_seed[0]}) == {} and seed_fields("c", by_seed) == {}
    lines = seed_section([{"draw": "d", "new_rec": "b", "new_interval": (0.805, 0.9)} | f, {"draw": "e"}])
    assert "median 0.010, max 0.010" in lines[1] and "held 2 of its recipe's 3 training runs" in lines[1] and lines[-1].startswith("| d | 3 | b | 0.040, 0.000, 0.020 | 0.010 | a, b, a | a: 0.000, 0.030, 0.000 | 0.040 |")
    assert "judged run by run: max 0.030" in lines[1]
    assert seed_section([{"draw": "e"}]) == []


def test_a_recipe_at_another_seed_is_its_own_run_and_the_own_seed_keeps_its_name(tmp_path):
    """recipe_run: the recipe's own seed keeps the directory named by the recipe's text (finished draws are
    not trained again); another seed is queued as the same recipe with run.seed changed, in its own directory."""
    from benchmarks.study_calibration import recipe_run

    recipe = tmp_path / "recipes" / "ce.yaml"
    recipe.parent.mkdir()
    recipe.write_text("# header naming the file\nmethod: ce\nrun:\n  seed: 0\n")
    todo = []
    own, other = (recipe_run(tmp_path, "ce", recipe, s, 0, todo) for s in (0, 3))
    digest = hashlib.sha256(b"method: ce\nrun:\n  seed: 0\n").hexdigest()[:12]
    assert own.name == f"ce-{digest}" and other.name == f"ce-{digest}-seed3"
    assert [r.config["run"]["seed"] for r in todo] == [0, 3]
    assert [r.config["run"]["output_dir"] for r in todo] == [str(own), str(other)]
    (other / "metrics.json").parent.mkdir(parents=True)
    (other / "metrics.json").write_text("{}")
    (other / "config.yaml").write_text(recipe.read_text().replace("seed: 0", "seed: 3"))
    todo = []
    assert recipe_run(tmp_path, "ce", recipe, 3, 0, todo) == other and todo == []  # trained: found, not queued


def test_the_epoch_rules_read_each_stop_from_one_tracked_curve():
    """--epoch-rules: each rule's stop epoch as recipe.py fixes it (the trials' lower median without their
    tracked folds, the pooled out-of-fold epoch with them), and the regret under each rule, by hand."""
    from benchmarks.recipe_epochs import epoch_fields, epoch_section, rule_epochs, test_curve

    good, poor = [[2, 0], [0, 2]], [[2, 0], [2, 0]]  # per trial, two images per class: macro-F1 1 and 1/3 (P .5)

    def trial(kept: int, track: dict[int, list]) -> dict:
        return {"choices": {"epochs": {"value": kept, "fix": {"train.stop_at_epoch": kept}}},
                "eval_track": [{"epoch": e, "confusion": c} for e, c in track.items()]}

    trials = [trial(10, {10: good, 20: good, 30: poor}), trial(20, {10: poor, 20: good, 30: poor}),
              trial(30, {10: poor, 20: good, 30: good})]
    curve = test_curve({"eval_track": [{"epoch": e, "confusion": c} for e, c in ((10, poor), (20, good), (30, good))]})
    assert curve[10] == pytest.approx((2 / 3 + 0) / 2) and curve[20] == 1.0
    assert rule_epochs(trials, curve) == {"median": 20, "pooled": 20, "last": 30, "oracle": 20}
    late = [trial(10, {10: good, 20: poor, 30: good})] * 3  # kept 10 everywhere; the pooled folds say 10 too
    assert rule_epochs(late, curve)["median"] == 10 and rule_epochs(late, curve)["pooled"] == 10

    curves = {"a": {10: 0.5, 20: 0.9, 30: 0.8}, "b": {10: 0.7, 20: 0.6, 30: 0.6}}
    epochs = {"a": {"median": 10, "pooled": 20, "last": 30, "oracle": 20},
              "b": {"median": 10, "pooled": 10, "last": 30, "oracle": 10}}
    f = epoch_fields("a", curves, epochs, {"a": 0.9, "b": 0.69})
    assert f["median"]["regret"] == pytest.approx(0.2) and f["median"]["best"] == "b"
    assert f["pooled"]["regret"] == 0.0 and f["last"]["regret"] == 0.0 and f["check"] == pytest.approx(0.01)
    table = epoch_section([{"draw": "d", "new_rec": "a", "epoch_rules": f}])
    assert "| median | 0.200 | 0.200 | 1/1 |" in table and "| d | a | 10 / 20 / 30 / 20 |" in "\n".join(table)
