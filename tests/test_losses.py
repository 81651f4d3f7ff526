import math

import pytest
import torch

from adpm_dist.diffusion.losses import diffusion_loss, rbf_mmd


def test_mmd_closed_form_two_points():
    a, b = torch.tensor([[0.0]]), torch.tensor([[1.0]])
    assert rbf_mmd(a, b).item() == pytest.approx(2 - 2 * math.exp(-1.0))


def test_mmd_zero_on_identical_and_positive_on_shift():
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(0))
    assert rbf_mmd(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert rbf_mmd(x, x + 3.0).item() > 0.1


def test_kernel_bandwidth_is_dimension_squared():
    a, b = torch.zeros(1, 4), torch.ones(1, 4)  # ||a-b||^2 = 4, D^2 = 16
    assert rbf_mmd(a, b).item() == pytest.approx(2 - 2 * math.exp(-4 / 16))


def test_diffusion_loss_weights_the_prior_chains():
    eps = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
    f, g, l = eps + 0.1, eps + 0.5, eps - 0.5
    mse = torch.mean((f - eps) ** 2)
    full = diffusion_loss(eps, f, g, l, mmd_weight=0.5)
    assert full.item() == pytest.approx((mse + 0.5 * (rbf_mmd(eps, g) + rbf_mmd(eps, l))).item(), rel=1e-6)
    assert diffusion_loss(eps, f).item() == pytest.approx(mse.item(), rel=1e-6)


def test_mmd_equals_diffmic_compute_mmd_written_out():
    """DiffMIC's compute_mmd: k(a, b) = exp(-(1/D) mean_d (a_d - b_d)^2), biased V-statistic (eq. 17)."""
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(5, 3, generator=g), torch.randn(7, 3, generator=g) + 0.5

    def k(x, y):
        return torch.exp(-((x[:, None, :] - y[None, :, :]) ** 2).mean(2) / x.shape[1])

    ref = k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean()
    assert rbf_mmd(a, b).item() == pytest.approx(ref.item(), rel=1e-5)


def test_mmd_weight_zero_leaves_the_mse():
    eps = torch.randn(8, 4, generator=torch.Generator().manual_seed(3))
    f = eps * 0.5
    assert diffusion_loss(eps, f, eps + 1, eps - 1, mmd_weight=0.0).item() == pytest.approx(
        torch.mean((f - eps) ** 2).item())
