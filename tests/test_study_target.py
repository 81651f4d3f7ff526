"""The target-prior estimate and the paired two-level bootstrap (adpm_dist/tune/study/target.py) against
closed forms and simulation: no training, no Ray."""
from __future__ import annotations

import numpy as np
import pytest

from adpm_dist.evaluate import classification_metrics
from adpm_dist.tune.study import target


def test_unweighted_prior_reproduces_the_plain_metrics():
    """With the pooled set's own mix as the target, the rescaling is the identity: scikit-learn's macro-F1."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    p = np.where(rng.random(200) < 0.7, y, rng.integers(0, 4, 200))
    c = target.confusions(y, p, 4)
    own = np.bincount(y, minlength=4) / y.size
    got = target.prior_scores(c, own)
    ref = classification_metrics(y, p, list("abcd"))
    assert got["macro_f1"] == pytest.approx(ref["macro_f1"])
    assert got["balanced_accuracy"] == pytest.approx(ref["balanced_accuracy"])


def test_balanced_prior_by_hand():
    """Head 90 images (81 right, 9 called tail), tail 10 (8 right, 2 called head). Rows rescaled to 1/2:
    head row (0.45, 0.05), tail row (0.1, 0.4). P_head = .45/.55, P_tail = .4/.45; R = .9, .8."""
    c = np.array([[81, 9], [2, 8]])
    got = target.prior_scores(c, target.target_prior("balanced", ["h", "t"]))
    ph, pt, rh, rt = 0.45 / 0.55, 0.4 / 0.45, 0.9, 0.8
    f1 = [2 * ph * rh / (ph + rh), 2 * pt * rt / (pt + rt)]
    assert got["macro_f1"] == pytest.approx(np.mean(f1))
    assert got["balanced_accuracy"] == pytest.approx(0.85)
    # on the long-tailed pool itself the tail's precision is 8/17: the balanced figure is higher
    assert classification_metrics([0] * 90 + [1] * 10, [0] * 81 + [1] * 9 + [0] * 2 + [1] * 8,
                                  ["h", "t"])["macro_f1"] < got["macro_f1"]


def test_balanced_estimate_matches_a_large_balanced_test_set():
    """Per-class behaviour fixed (a confusion-row distribution per class); a long-tailed pool estimates the
    macro-F1 that a large balanced test set drawn from the same behaviour measures."""
    rng = np.random.default_rng(3)
    k = 5
    behaviour = np.full((k, k), 0.04) + np.diag(np.linspace(0.84, 0.5, k))
    behaviour /= behaviour.sum(1, keepdims=True)
    def draw(counts):
        y = np.repeat(np.arange(k), counts)
        p = np.array([rng.choice(k, p=behaviour[i]) for i in y])
        return y, p
    y, p = draw([4000, 1500, 600, 200, 80])
    estimate = target.prior_scores(target.confusions(y, p, k), np.full(k, 1 / k))["macro_f1"]
    yt, pt = draw([20000] * k)
    assert estimate == pytest.approx(classification_metrics(yt, pt, list("abcde"))["macro_f1"], abs=0.01)


def test_classes_without_images_are_left_out_not_counted_zero():
    c = np.array([[5, 0, 0], [0, 5, 0], [0, 0, 0]])
    got = target.prior_scores(c, np.full(3, 1 / 3))
    assert got["macro_f1"] == pytest.approx(1.0)
    assert np.isnan(got["per_class_f1"][2])


def test_target_prior_forms_and_errors():
    names = ["a", "b"]
    assert target.target_prior("train", names, {"a": 30, "b": 10}) == pytest.approx([0.75, 0.25])
    assert target.target_prior({"a": 1, "b": 3}, names) == pytest.approx([0.25, 0.75])
    with pytest.raises(ValueError, match="missing"):
        target.target_prior({"a": 1}, names)
    with pytest.raises(ValueError, match=">= 0"):
        target.target_prior({"a": -1, "b": 1}, names)
    with pytest.raises(ValueError, match="expected balanced"):
        target.target_prior("uniform", names)


def test_bootstrap_is_paired_and_covers_the_true_score():
    """Identical candidates differ by exactly 0 in every replicate; the interval of one candidate covers the
    behaviour's true balanced macro-F1 in most simulated studies (percentile intervals under-cover a little
    at 5 tail images)."""
    k = 4
    behaviour = np.full((k, k), 0.05) + np.diag([0.8, 0.7, 0.6, 0.5])
    behaviour /= behaviour.sum(1, keepdims=True)
    rng = np.random.default_rng(5)
    yt = np.repeat(np.arange(k), 50000)
    truth = classification_metrics(yt, (rng.random(yt.size)[:, None] > behaviour[yt].cumsum(1)).sum(1),
                                   list("abcd"))["macro_f1"]
    covered, runs = 0, 60
    for r in range(runs):
        y = np.repeat(np.arange(k), [120, 40, 12, 5])
        p = (rng.random(y.size)[:, None] > behaviour[y].cumsum(1)).sum(1)
        folds = np.arange(y.size) % 3
        reps = target.paired_bootstrap({"x": p[None], "same": p[None].copy()}, y, folds, k, np.full(k, 1 / k),
                                       n_boot=400, seed=r)
        assert np.all(reps["x"] == reps["same"])
        lo, hi = target.percentile_interval(reps["x"])
        covered += lo <= truth <= hi
    assert covered / runs >= 0.8  # 200 simulated studies: 0.87 here, 0.94 at 10 tail images (docs/tune.md)


def test_bootstrap_draws_seeds_per_fold():
    """Two seeds that disagree only on fold 1: replicates mix them, so the spread is wider than either seed's."""
    y = np.array([0, 1] * 30)
    folds = np.repeat([0, 1], 30)
    right = y.copy()
    wrong_on_fold1 = np.where(folds == 1, 1 - y, y)
    reps = target.paired_bootstrap({"c": np.stack([right, wrong_on_fold1])}, y, folds, 2, np.array([0.5, 0.5]),
                                   n_boot=300, seed=1)["c"]
    assert reps.min() < 0.7 and reps.max() > 0.97     # Jeffreys' half image wrong keeps it just below 1


def test_wilson_interval():
    lo, hi = target.wilson_interval(11, 12)
    assert lo == pytest.approx(0.646, abs=0.01) and hi == pytest.approx(0.985, abs=0.01)


def test_pseudo_images_add_half_an_image_right_and_half_wrong_to_each_class_with_images():
    c = np.array([[2.0, 0.0, 0.0], [1.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    got = target.with_pseudo_images(c)
    assert got[0].tolist() == [2.5, 0.25, 0.25] and got[1].tolist() == [1.25, 3.5, 0.25]
    assert got[2].tolist() == [0.0, 0.0, 0.0]                 # no images: still left out, not invented


def test_estimate_is_the_jeffreys_posterior_mean_of_each_recall():
    """2 of 2 right reads 2.5 / 3, 0 of 2 reads 0.5 / 3; seeds' runs are averaged, not counted as images."""
    y = np.array([0, 0, 1, 1])
    runs = [np.array([0, 0, 0, 0]), np.array([0, 0, 0, 0])]
    got = target.estimate_scores(runs, y, 2, np.array([0.5, 0.5]))
    assert got["balanced_accuracy"] == pytest.approx((2.5 / 3 + 0.5 / 3) / 2)


def test_bootstrap_recall_of_a_class_is_its_jeffreys_posterior():
    """A class with x of n right: its replicate recall is Beta(x + 1/2, n - x + 1/2) exactly (Gamma
    additivity), however few its images: 2 of 2 right no longer resamples as 1 every time."""
    from scipy import stats

    y = np.array([0] * 3 + [1] * 40)
    p = np.array([0, 0, 1] + [1] * 40)                       # class 0: 2 of 3 right
    rng = np.random.default_rng(3)
    w, right, wrong = target.class_posterior_weights(y, 2, 20000, rng)
    c = target.with_pseudo_images(target.confusions(y, np.broadcast_to(p, w.shape), 2, w), right, wrong)
    recall = c[:, 0, 0] / c[:, 0].sum(-1)
    assert stats.kstest(recall, stats.beta(2.5, 1.5).cdf).pvalue > 0.01
    lo, hi = target.percentile_interval(recall)
    assert lo == pytest.approx(stats.beta(2.5, 1.5).ppf(0.025), abs=0.02) and hi < 1.0


def test_interval_of_a_tail_class_all_right_covers_a_lower_true_recall():
    """The narrowness the calibration found: a tail class of 2 out-of-fold images, both right, while the
    class's true recall is 0.8. Without the prior every replicate has recall 1 there; with it, the interval
    of the balanced accuracy covers the truth in most simulated studies."""
    rng = np.random.default_rng(11)
    truth = (0.95 + 0.8) / 2
    covered, runs = 0, 200
    for r in range(runs):
        y = np.repeat([0, 1], [200, 2])
        p = np.where(y == 0, (rng.random(y.size) > 0.95).astype(int), (rng.random(y.size) > 0.8).astype(int) ^ 1)
        w, right, wrong = target.class_posterior_weights(y, 2, 400, rng)
        c = target.with_pseudo_images(target.confusions(y, np.broadcast_to(p, w.shape), 2, w), right, wrong)
        lo, hi = target.percentile_interval(target.prior_scores(c, np.array([0.5, 0.5]))["balanced_accuracy"])
        covered += lo <= truth <= hi
    assert covered / runs >= 0.9
