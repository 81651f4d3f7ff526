"""The noise law fitted (adpm_dist/diffusion/noise_fit.py): eq. 7 recovered from per-class losses, mapped onto eq. 14.

The end-to-end run of `tune/search_noise.py --fit` is in tests/test_tune_fit.py (it starts Ray).
"""
import math

import numpy as np
import pytest

from adpm_dist.diffusion.noise import class_noise_levels
from adpm_dist.diffusion.noise_fit import bootstrap_fit, eq14_settings, fit_power_law

COUNTS = [845, 730, 244, 235, 192, 52]  # PAD-UFES's training counts, head to tail
LAWS = [(0.5, 3.0, 0.2), (1 / 6, 5.0, 0.1), (1.0, 40.0, 0.0), (0.3, 2.0, 1.5)]  # (alpha, beta, c)


def law(alpha: float, beta: float, c: float, n=COUNTS) -> np.ndarray:
    return beta * np.asarray(n, dtype=float) ** -alpha + c


@pytest.mark.parametrize("alpha, beta, c", LAWS)
def test_fit_recovers_the_law_from_exact_losses(alpha, beta, c):
    fit = fit_power_law(COUNTS, law(alpha, beta, c), weights=[50, 40, 30, 30, 20, 10])
    assert (fit.alpha, fit.beta, fit.c) == pytest.approx((alpha, beta, c), rel=1e-6, abs=1e-6)
    assert fit.r2 == pytest.approx(1.0) and fit.r2_adjusted == pytest.approx(1.0)


def test_fit_is_deterministic_and_within_bounds():
    losses = [0.4, 0.5, 0.45, 0.9, 0.3, 1.2]  # not a power law at all
    a, b = fit_power_law(COUNTS, losses), fit_power_law(COUNTS, losses)
    assert a == b
    assert a.alpha >= 0 and a.beta >= 0 and a.c >= 0
    assert a.r2 < 0.9 and "R^2" in a.verdict()


def test_constant_losses_are_no_power_law():
    fit = fit_power_law(COUNTS, [0.7] * 6)
    assert fit.predict(COUNTS) == pytest.approx([0.7] * 6)
    assert fit.r2 == 0.0 and fit.sse_constant == pytest.approx(0.0, abs=1e-20)  # nothing for the counts to explain


def test_weights_count_a_class_by_its_precision():
    """An outlying class with one validation sample pulls the fit less than with a hundred."""
    losses = law(0.5, 3.0, 0.2)
    losses[2] += 0.3
    light = fit_power_law(COUNTS, losses, weights=[100, 100, 1, 100, 100, 100])
    heavy = fit_power_law(COUNTS, losses, weights=[100, 100, 100, 100, 100, 100])
    assert abs(light.predict(COUNTS[2]) - losses[2]) > abs(heavy.predict(COUNTS[2]) - losses[2])


def test_zero_weight_classes_are_left_out():
    fit = fit_power_law([*COUNTS, 7], [*law(0.5, 3.0, 0.2), 99.0], weights=[1, 1, 1, 1, 1, 1, 0])
    assert fit.counts == tuple(map(float, COUNTS))
    assert fit.alpha == pytest.approx(0.5, rel=1e-6)


def test_bootstrap_interval_holds_the_true_law():
    """Per-sample NLLs drawn around the law (exponential, mean = the law's loss), 300 a class, fixed seed."""
    rng = np.random.default_rng(1)
    truth = (0.5, 3.0, 0.2)
    samples = [rng.exponential(mean, 300) for mean in law(*truth)]
    boot = bootstrap_fit(COUNTS, samples, n_boot=100, seed=0, level=0.9)
    for name, value in zip(("alpha", "beta", "c"), truth):
        low, high = boot.intervals[name]
        assert low <= value <= high, (name, value, boot.intervals)
        assert low <= getattr(boot.fit, name) <= high
    assert boot.fit.weights == (300.0,) * 6
    again = bootstrap_fit(COUNTS, samples, n_boot=100, seed=0, level=0.9)
    assert again.intervals == boot.intervals  # seeded


def test_bootstrap_leaves_out_classes_without_samples():
    rng = np.random.default_rng(0)
    samples = [rng.exponential(m, 50) for m in law(0.5, 3.0, 0.2)]
    samples[3] = []
    boot = bootstrap_fit(COUNTS, samples, n_boot=5)
    assert len(boot.fit.counts) == 5 and COUNTS[3] not in boot.fit.counts


@pytest.mark.parametrize("alpha, beta, c", LAWS)
def test_eq14_settings_reproduce_the_fitted_loss_ratio(alpha, beta, c):
    """lambda_j = E[L](n_j) / E[L](n_max) (eq. 14 from eq. 7) through class_noise_levels and the overrides."""
    fit = fit_power_law(COUNTS, law(alpha, beta, c))
    settings = eq14_settings(fit)
    assert settings["noise.formula"] == ("power" if c == 0 else "B")
    levels = class_noise_levels(COUNTS, alpha=settings["noise.alpha"], beta=settings["noise.beta"],
                                formula=settings["noise.formula"])
    direct = fit.predict(COUNTS) / fit.predict(max(COUNTS))
    assert levels.tolist() == pytest.approx(direct.tolist(), rel=1e-6)
    assert all(isinstance(v, (float, str)) for v in settings.values())  # plain values for set_key and JSON


def test_eq14_settings_of_a_flat_law_are_isotropic():
    fit = fit_power_law(COUNTS, [0.5] * 6)
    settings = eq14_settings(fit)
    levels = class_noise_levels(COUNTS, alpha=settings["noise.alpha"], beta=settings["noise.beta"],
                                formula=settings["noise.formula"])
    assert levels.tolist() == pytest.approx([1.0] * 6, abs=1e-6)


@pytest.mark.parametrize("counts, losses, weights, message", [
    ([100, 50], [0.1, 0.2], None, ">= 3 classes"),
    ([100, 50, 10, 5], [0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0], ">= 3 classes"),
    ([100, 0, 10], [0.1, 0.2, 0.3], None, "counts must be > 0"),
    ([100, -5, 10], [0.1, 0.2, 0.3], None, "counts must be > 0"),
    ([100, 50, 10], [0.1, 0.2], None, "one length"),
    ([100, 50, 10], [0.1, 0.2, 0.3], [1, 2], "one length"),
    ([100, 50, 10], [0.1, math.nan, 0.3], None, "losses contain NaN"),
    ([100, math.nan, 10], [0.1, 0.2, 0.3], None, "counts contain NaN"),
    ([100, 50, 10], [0.1, 0.2, 0.3], [1, -1, 1], "weights must be >= 0"),
])
def test_bad_input_is_named(counts, losses, weights, message):
    with pytest.raises(ValueError, match=message.replace("^", r"\^")):
        fit_power_law(counts, losses, weights=weights)


def test_bootstrap_input_errors():
    with pytest.raises(ValueError, match="one entry per class"):
        bootstrap_fit([100, 50, 10], [[0.1], [0.2]])
    with pytest.raises(ValueError, match=">= 3 classes"):
        bootstrap_fit([100, 50, 10], [[0.1], [], [0.3]])
    with pytest.raises(ValueError, match="level"):
        bootstrap_fit([100, 50, 10], [[0.1], [0.2], [0.3]], level=1.5)
