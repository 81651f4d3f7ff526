"""The study's arithmetic against closed forms (no training, no Ray)."""
from __future__ import annotations

import numpy as np
import pytest

from adpm_dist.tune.study import stats


def test_pooled_macro_f1_differs_from_the_mean_of_fold_scores():
    """Fold 0 holds the only tail image and misses it; fold 1 has none. Per fold, fold 1's macro-F1 over the
    3 classes scores tail 0 (absent); pooled, tail counts once: F1(head)=1, F1(mid)=2/3... computed by hand."""
    names = ["head", "mid", "tail"]
    labels = ["head", "head", "mid", "tail"] + ["head", "mid", "mid"]
    preds = ["head", "head", "mid", "mid"] + ["head", "mid", "mid"]
    pooled = stats.pooled_scores(labels, preds, names)
    # head: tp 3 fp 0 fn 0 -> 1; mid: tp 3, fp 1, fn 0 -> 6/7; tail: tp 0 -> 0
    assert pooled["macro_f1"] == pytest.approx((1 + 6 / 7 + 0) / 3)
    assert stats.unseen_classes(["head", "mid"], names) == ["tail"]
    with pytest.raises(ValueError, match="other"):
        stats.pooled_scores(["other"], ["head"], names)


def test_class_groups_are_thirds_by_count():
    counts = {f"c{i}": 100 - 10 * i for i in range(10)}
    g = stats.class_groups(counts)
    assert g == {"head": ["c0", "c1", "c2", "c3"], "medium": ["c4", "c5", "c6"], "tail": ["c7", "c8", "c9"]}
    assert stats.class_groups({"a": 1, "b": 5, "c": 3}) == {"head": ["b"], "medium": ["c"], "tail": ["a"]}
    per = {c: {"f1": 0.1 * i} for i, c in enumerate(["b", "c", "a"])}
    assert stats.group_f1(per, {"head": ["b"], "medium": ["c"], "tail": ["a"]}) == pytest.approx(
        {"head": 0.0, "medium": 0.1, "tail": 0.2})


def test_paired_differences_use_common_pairs_only():
    a = {(0, 0): 0.5, (1, 0): 0.6, (2, 0): 0.7}
    b = {(0, 0): 0.4, (1, 0): 0.65}
    assert stats.paired_differences(a, b) == pytest.approx({(0, 0): 0.1, (1, 0): -0.05})


def test_bootstrap_interval_closed_forms():
    assert stats.bootstrap_interval([]) != stats.bootstrap_interval([])  # (nan, nan)
    assert stats.bootstrap_interval([0.2]) == (0.2, 0.2)
    assert stats.bootstrap_interval([0.3, 0.3, 0.3]) == (0.3, 0.3)
    # two values: resampled means lie on {a, (a+b)/2, b}; with many pairs the 95% interval reaches the ends
    lo, hi = stats.bootstrap_interval([0.0, 1.0] * 2, n_boot=4000)
    assert 0.0 <= lo < 0.5 < hi <= 1.0
    # large symmetric sample: the interval is about mean +- 1.96 sd / sqrt(n)
    x = np.random.default_rng(1).normal(0.1, 0.05, 400)
    lo, hi = stats.bootstrap_interval(x, n_boot=4000)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    assert lo == pytest.approx(x.mean() - half, abs=0.002) and hi == pytest.approx(x.mean() + half, abs=0.002)
    assert stats.bootstrap_interval(x) == stats.bootstrap_interval(x)  # seeded
    assert stats.covers_zero((-0.1, 0.2)) and not stats.covers_zero((0.01, 0.2))


def _estimate(name: str, hours_per_trial: float, trials: int = 3):
    from adpm_dist.tune.study.results import Estimate

    return Estimate(name, {}, {}, trials, float("nan"),
                    {"trials": trials, "cpu_hours": hours_per_trial * trials, "gpu_hours": 0.0})


def _decision(estimate: float, verdict: str):
    from adpm_dist.tune.study.compare import Decision

    return Decision(estimate, estimate - 0.02, estimate + 0.02, estimate, verdict=verdict)


def test_recommendation_is_the_cheapest_equal_candidate_and_timing_noise_does_not_decide():
    from adpm_dist.tune.study import compare

    lead, same, cheap, worse, undecided = (_estimate("la", 0.0050), _estimate("bs", 0.0048), _estimate("posthoc", 0.0030),
                                           _estimate("ce", 0.0010), _estimate("focal", 0.0001))
    d = {"la": _decision(0.82, "leader"), "bs": _decision(0.815, "equal"), "posthoc": _decision(0.812, "equal"),
         "ce": _decision(0.52, "clearly worse"), "focal": _decision(0.80, "undecided")}
    assert compare.recommend([lead, same, worse, undecided], d) is lead        # bs: 4% cheaper is timing noise
    assert compare.recommend([lead, same, worse], d, cost_tolerance=0.0) is same
    assert compare.recommend([lead, same, cheap, worse, undecided], d) is cheap  # equal and really cheaper
    assert compare.recommend([], {}) is None


def test_verdicts_against_the_equivalence_margin():
    from adpm_dist.tune.study.compare import verdict

    assert verdict(-0.004, 0.002, 0.01) == "equal"          # a 0.4-point difference no one can act on
    assert verdict(-0.007, -0.001, 0.01) == "equal"         # 'distinguishable' from 0, still equal
    assert verdict(-0.047, 0.0, 0.01) == "undecided"        # touches 0 on one fold: not enough to be equal
    assert verdict(-0.30, -0.25, 0.01) == "clearly worse"


def test_a_recipe_on_far_more_images_than_each_cv_run_is_said():
    """answer.data_share: images per CV run (mean of the recipe point's trials) over the out-of-fold images the
    recipe trains on; below DATA_SHARE the answer says the interval is of such a run."""
    from types import SimpleNamespace

    from adpm_dist.tune.study.answer import DATA_SHARE, Answer, data_share

    def rec(per_run, images):
        return SimpleNamespace(name="la", recipe_runs=[{"train_counts": {"a": per_run - 5, "b": 5}}] * 3,
                               oof=SimpleNamespace(labels=np.zeros(images)))

    assert data_share(rec(57, 100)) == pytest.approx(0.57)
    assert np.isnan(data_share(SimpleNamespace(recipe_runs=[{}], oof=None)))

    def answer(e):
        return Answer(search={}, estimates=[], decisions={}, lead=e, rec=e, prior=np.ones(2) / 2, target="balanced",
                      eps=0.01, class_names=["a", "b"])

    said = answer(rec(57, 100)).less_data()
    assert len(said) == 1 and "la trained on 57% of the images its recipe trains on" in said[0]
    assert answer(rec(int(DATA_SHARE * 100) + 1, 100)).less_data() == []
    assert answer(None).less_data() == []
