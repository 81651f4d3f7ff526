import math

import pytest
import torch

from adpm_dist.diffusion.noise import class_noise_levels, estimated_noise_level, noise_std, soft_counts

PAD_COUNTS = [845, 730, 244, 235, 192, 52]  # BCC, ACK, NEV, SEK, SCC, MEL


def test_formula_a_matches_spec_values_for_pad_ufes():
    levels = class_noise_levels(PAD_COUNTS, alpha=1 / 6, beta=5, formula="A")
    expected = [1.000, 1.021, 1.192, 1.198, 1.234, 1.493]  # docs/algorithm.md, "Noise levels (eq. 14)"
    assert levels.tolist() == pytest.approx(expected, abs=1e-3)


def test_formula_b_and_power_match_closed_forms():
    b = class_noise_levels(PAD_COUNTS, alpha=1 / 6, beta=5, formula="B")
    assert b.tolist() == pytest.approx([1.000, 1.015, 1.142, 1.147, 1.174, 1.366], abs=1e-3)
    power = class_noise_levels(PAD_COUNTS, alpha=1 / 6, beta=5, formula="power")
    assert power[-1].item() == pytest.approx((845 / 52) ** (1 / 6), rel=1e-6)


@pytest.mark.parametrize("formula", ["A", "B", "power"])
@pytest.mark.parametrize("beta", [1.0, 5.0, 10.0])
def test_alpha_zero_is_isotropic_and_levels_bounded(formula, beta):
    assert torch.equal(class_noise_levels(PAD_COUNTS, alpha=0.0, beta=beta, formula=formula), torch.ones(6))
    levels = class_noise_levels(PAD_COUNTS, alpha=0.5, beta=beta, formula=formula)
    ir = max(PAD_COUNTS) / min(PAD_COUNTS)
    assert levels[0].item() == pytest.approx(1.0)
    assert (levels >= 1 - 1e-6).all() and (levels <= ir**0.5 + 1e-6).all()
    # Lemma 2.1: fewer samples, more noise.
    assert all(levels[i] <= levels[i + 1] + 1e-7 for i in range(5))


def test_n_floor_caps_tiny_classes():
    levels = class_noise_levels([1000, 6, 9], alpha=1 / 6, beta=5, n_floor=10)
    assert levels[1].item() == pytest.approx(levels[2].item())
    assert levels[1].item() == pytest.approx((1 + 5 * (100) ** (1 / 6)) / 6)


def test_unknown_formula_names_the_key():
    with pytest.raises(ValueError, match="noise.formula"):
        class_noise_levels(PAD_COUNTS, alpha=1 / 6, beta=5, formula="C")


def test_estimated_noise_level_expected_and_argmax():
    levels = torch.tensor([1.0, 1.5, 2.0])
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]])
    assert estimated_noise_level(probs, levels).squeeze(1).tolist() == pytest.approx([1.25, 0.1 + 0.3 + 1.4])
    assert estimated_noise_level(probs, levels, "argmax").squeeze(1).tolist() == [1.0, 2.0]
    assert estimated_noise_level(probs, levels).shape == (2, 1)
    assert not math.isnan(estimated_noise_level(probs, levels).sum().item())


def test_noise_std_on_std_or_variance():
    lam = torch.tensor([[1.0], [1.44], [2.25]])
    assert torch.equal(noise_std(lam, "std"), lam)
    assert torch.allclose(noise_std(lam, "variance"), torch.tensor([[1.0], [1.2], [1.5]]))
    with pytest.raises(ValueError, match="noise.apply"):
        noise_std(lam, "both")


def test_soft_counts_re_estimate_levels():
    """Eq. 18 with soft counts: n_hat_j = sum_x p_j(x), then eq. 14; formula A depends only on count ratios."""
    probs = torch.tensor([[0.8, 0.2, 0.0], [0.6, 0.3, 0.1], [0.6, 0.1, 0.3]])
    n_hat = soft_counts(probs)
    assert n_hat.tolist() == pytest.approx([2.0, 0.6, 0.4])
    a = class_noise_levels(n_hat * 100, alpha=1 / 6, beta=5, formula="A")
    assert torch.allclose(a, class_noise_levels(n_hat * 1000, alpha=1 / 6, beta=5, formula="A"))
    assert a.tolist() == pytest.approx([1.0, (1 + 5 * (2 / 0.6) ** (1 / 6)) / 6, (1 + 5 * 5 ** (1 / 6)) / 6], rel=1e-5)
    # classes with a soft count below one are treated as one sample (no infinite level)
    assert torch.isfinite(class_noise_levels(torch.tensor([5.0, 0.0]), alpha=1 / 6, beta=5)).all()
