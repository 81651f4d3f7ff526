import pytest
import torch

from adpm_dist.diffusion.scheduler import ADPMScheduler, antithetic_timesteps, linear_betas


@pytest.fixture(scope="module")
def sched():
    return ADPMScheduler.linear(1000)


def test_schedule_values_match_spec(sched):
    # docs/algorithm.md, "Schedule and notation": abar_249 = 0.524, abar_59 = 0.960, abar_999 = 4.0e-5
    assert sched.abar[249].item() == pytest.approx(0.524, abs=1e-3)
    assert sched.abar[59].item() == pytest.approx(0.960, abs=1e-3)
    assert sched.abar[999].item() == pytest.approx(4.0e-5, rel=0.05)
    assert linear_betas(1000)[0].item() == pytest.approx(1e-4)


def test_posterior_coefficients_sum_to_one(sched):
    assert torch.allclose(sched.g0 + sched.g1 + sched.g2, torch.ones(1000, dtype=torch.float64), atol=1e-10)
    assert sched.g0[0].item() == pytest.approx(1.0) and sched.posterior_var[0].item() == 0.0


@pytest.mark.parametrize("i", [1, 10, 249, 998])
@pytest.mark.parametrize("lam", [1.0, 1.5])
def test_posterior_matches_gaussian_conditioning(sched, i, lam):
    """Bayes on the centred variable yc = y - mu (eq. 5, docs/algorithm.md): closed form vs scheduler.posterior."""
    torch.manual_seed(0)
    mu, y0, y_t = torch.rand(4, 3).double(), torch.rand(4, 3).double(), torch.randn(4, 3).double()
    abar_prev, alpha = sched.abar[i - 1], sched.abar[i] / sched.abar[i - 1]
    prior_var, lik_var = lam**2 * (1 - abar_prev), lam**2 * (1 - alpha)
    var = 1 / (1 / prior_var + alpha / lik_var)
    mean_c = var * (abar_prev.sqrt() * (y0 - mu) / prior_var + alpha.sqrt() * (y_t - mu) / lik_var)
    mean, v = sched.posterior(y0, y_t, mu, i, lam)
    assert torch.allclose(mean, mean_c + mu, atol=1e-9)
    assert v.item() == pytest.approx(var.item(), rel=1e-9)


def test_forward_moments_per_class_match_closed_form(sched):
    """Eq. 5: y_t ~ N(sab y0 + (1 - sab) mu, lambda^2 (1 - abar)) for each class's lambda."""
    g = torch.Generator().manual_seed(0)
    n, k, i = 200_000, 3, 400
    mu = torch.tensor([0.2, 0.5, 0.3])
    for label, lam in [(0, 1.0), (2, 1.8)]:
        y0 = torch.nn.functional.one_hot(torch.full((n,), label), k).float()
        y_t = sched.add_noise(y0, mu.expand(n, k), torch.randn(n, k, generator=g), i, lam)
        sab = sched.sab[i].item()
        assert torch.allclose(y_t.mean(0), sab * y0[0] + (1 - sab) * mu, atol=0.01)
        expected_var = lam**2 * (1 - sched.abar[i].item())
        assert torch.allclose(y_t.var(0), torch.full((k,), expected_var), rtol=0.02)


def test_unit_lambda_is_card(sched):
    """alpha = 0 gives lambda = 1: exactly CARD's q_sample for the same eps (eq. 5)."""
    y0, mu, eps = torch.eye(4), torch.full((4, 4), 0.25), torch.randn(4, 4)
    t = torch.tensor([0, 100, 500, 999])
    sab, sdev = sched.sab[t].float().unsqueeze(1), sched.sdev[t].float().unsqueeze(1)
    card = sab * y0 + (1 - sab) * mu + sdev * eps
    assert torch.allclose(sched.add_noise(y0, mu, eps, t, torch.ones(4, 1)), card, atol=1e-6)


def test_predict_start_inverts_add_noise(sched):
    y0, mu, eps, lam = torch.eye(3), torch.rand(3, 3), torch.randn(3, 3), torch.tensor([[1.0], [1.3], [2.0]])
    t = torch.tensor([5, 200, 900])
    y_t = sched.add_noise(y0, mu, eps, t, lam)
    assert torch.allclose(sched.predict_start(y_t, mu, eps, t, lam), y0, atol=1e-4)


def test_eps_from_start_inverts_predict_start(sched):
    """diffusion.prediction=y0 converts y0_hat to the eps eq. 5 implies; predict_start undoes it."""
    y0, mu, eps, lam = torch.eye(3), torch.rand(3, 3), torch.randn(3, 3), torch.tensor([[1.0], [1.3], [2.0]])
    t = torch.tensor([0, 200, 999])
    y_t = sched.add_noise(y0, mu, eps, t, lam)
    assert torch.allclose(sched.eps_from_start(y_t, mu, y0, t, lam), eps, atol=1e-3)
    y0_hat = torch.rand(3, 3)
    assert torch.allclose(sched.predict_start(y_t, mu, sched.eps_from_start(y_t, mu, y0_hat, t, lam), t, lam),
                          y0_hat, atol=1e-4)


def test_perfect_denoiser_recovers_y0(sched):
    """With the true noise at every step, the truncated chain lands on y0 exactly."""
    y0, mu = torch.eye(3), torch.full((3, 3), 1 / 3)
    lam = torch.tensor([[1.0], [1.2], [1.5]])

    def oracle(y_t, t):  # the eps that explains y_t given the true y0
        i = t[0].item()
        return (y_t - sched.sab[i].item() * y0 - (1 - sched.sab[i].item()) * mu) / (lam * sched.sdev[i].item())

    out = sched.sample(oracle, mu, lam, steps=250, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, y0, atol=1e-4)


def test_antithetic_pairs():
    t = antithetic_timesteps(9, 1000, torch.Generator().manual_seed(0))
    assert t.shape == (9,) and int(t.min()) >= 0 and int(t.max()) <= 999
    assert torch.equal(t[5:9], 999 - t[:4])
