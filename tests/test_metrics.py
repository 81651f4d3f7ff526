"""Metrics of adpm_dist.evaluate against scikit-learn on random data, ECE against closed forms."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from adpm_dist.evaluate import (calibration_bins, classification_metrics, confusion_matrix,
                                expected_calibration_error, normalize_rows, one_vs_rest_auc)


def _random_probs(rng, n, k, decimals=None):
    p = rng.dirichlet(np.ones(k) * 0.7, size=n)
    if decimals is not None:  # coarse scores: many ties, the case rank-based AUCs get wrong
        p = np.round(p, decimals)
    return p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    k = 5
    y, p = rng.integers(0, k, 300), rng.integers(0, k - 1, 300)  # class 4 never predicted
    m = classification_metrics(y, p, [f"c{i}" for i in range(k)])
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, p, average="macro", labels=range(k), zero_division=0))
    assert m["macro_recall"] == pytest.approx(skm.recall_score(y, p, average="macro", labels=range(k)))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p))
    assert m["per_class"]["c4"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": int((y == 4).sum())}


@pytest.mark.parametrize("seed", [0, 1])
def test_confusion_matrix_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, 6, 500), rng.integers(0, 6, 500)
    cm = confusion_matrix(y, p, 7)  # a 7th class absent from both: zero row and column
    assert np.array_equal(cm, skm.confusion_matrix(y, p, labels=range(7)))
    norm = normalize_rows(cm)
    assert np.allclose(norm[:6].sum(1), 1) and np.all(norm[6] == 0)
    assert np.allclose(np.diag(norm)[:6], skm.recall_score(y, p, labels=range(6), average=None))


def test_confusion_matrix_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match="predictions must lie in"):
        confusion_matrix([0, 1], [0, 3], 3)


@pytest.mark.parametrize("seed,decimals", [(0, None), (1, None), (2, 1), (3, 2)])
def test_one_vs_rest_auc_matches_sklearn(seed, decimals):
    rng = np.random.default_rng(seed)
    k, n = 4, 400
    probs = _random_probs(rng, n, k, decimals)
    y = rng.integers(0, k, n)
    probs[np.arange(n), y] += 0.3 * rng.random(n)  # some signal, so AUCs are not all 0.5
    probs /= probs.sum(1, keepdims=True)
    auc = one_vs_rest_auc(y, probs)
    for c in range(k):
        assert auc["per_class"][c] == pytest.approx(skm.roc_auc_score(y == c, probs[:, c]), abs=1e-12)
    assert auc["macro"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))


def test_auc_of_a_class_without_positives_is_nan_and_skipped():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.4, 0.5, 0.1]])
    auc = one_vs_rest_auc(y, probs)
    assert np.isnan(auc["per_class"][2]) and auc["macro"] == pytest.approx(1.0)


def test_ece_single_bin_closed_form():
    # Every sample has confidence c and 3 of 4 are right: ECE = |3/4 - c|.
    c = 0.6
    probs = np.array([[c, 1 - c]] * 4)
    y = np.array([0, 0, 0, 1])
    assert expected_calibration_error(y, probs, n_bins=10) == pytest.approx(abs(0.75 - c))


def test_ece_two_bins_by_hand():
    # bin (0.5, 0.6]: confidences 0.55, 0.55, right 1 of 2  -> |0.5 - 0.55| = 0.05, weight 2/5
    # bin (0.9, 1.0]: confidences 0.95, 0.95, 1.0, right 3 of 3 -> |1 - 0.9666..| = 0.0333.., weight 3/5
    probs = np.array([[0.55, 0.45], [0.45, 0.55], [0.95, 0.05], [0.05, 0.95], [1.0, 0.0]])
    y = np.array([0, 0, 0, 1, 0])
    expected = 2 / 5 * 0.05 + 3 / 5 * abs(1 - (0.95 + 0.95 + 1.0) / 3)
    assert expected_calibration_error(y, probs, n_bins=10) == pytest.approx(expected)
    bins = calibration_bins(y, probs, n_bins=10)
    assert bins["count"].tolist() == [0, 0, 0, 0, 0, 2, 0, 0, 0, 3]
    assert bins["accuracy"][5] == pytest.approx(0.5) and bins["confidence"][9] == pytest.approx(2.9 / 3)


def test_ece_bin_edges_are_right_closed():
    # confidence exactly 0.5 belongs to bin (0.4, 0.5], not (0.5, 0.6]
    bins = calibration_bins(np.array([0]), np.array([[0.5, 0.5]]), n_bins=10)
    assert bins["count"][4] == 1


def test_ece_perfectly_calibrated_random_data_is_small():
    # labels drawn from the predicted distribution: calibrated by construction, ECE -> 0 with n.
    rng = np.random.default_rng(0)
    probs = _random_probs(rng, 20000, 3)
    y = np.array([rng.choice(3, p=row) for row in probs])
    assert expected_calibration_error(y, probs) < 0.02
    # and a sharpened (over-confident) copy is clearly worse
    sharp = probs ** 3 / (probs ** 3).sum(1, keepdims=True)
    assert expected_calibration_error(y, sharp) > 0.05
