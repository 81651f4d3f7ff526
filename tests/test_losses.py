import math

import pytest
import torch

from adpm_dist.losses import diffusion_loss, rbf_mmd


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
