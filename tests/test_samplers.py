"""Samplers (truncated, respaced, DDIM) and the vote read-out of docs/algorithm.md, against closed forms."""
from __future__ import annotations

import pytest
import torch

from adpm_dist.diffusion.scheduler import ADPMScheduler, respaced_timesteps, sample_labels, vote_readout


@pytest.fixture(scope="module")
def sched():
    return ADPMScheduler.linear(1000)


def random_eps_fn(seed: int = 0):
    """A fixed, non-trivial 'network': deterministic in (y_t, t), different at every step."""
    g = torch.Generator().manual_seed(seed)
    w, table = torch.randn(4, 4, generator=g).double() * 0.3, torch.randn(1001, 4, generator=g).double()

    def eps_fn(y_t, t):
        return torch.tanh(y_t @ w) + 0.5 * table[t]

    return eps_fn


def oracle(sched_, y0, mu, lam):
    """The eps that explains y_t given the true y0 (eq. 5 inverted with the network's time index)."""
    full = ADPMScheduler.linear(1000)

    def eps_fn(y_t, t):
        i = t[0].item()
        return (y_t - full.sab[i] * y0 - (1 - full.sab[i]) * mu) / (lam * full.sdev[i])

    return eps_fn


def inputs(b: int = 5, k: int = 4):
    g = torch.Generator().manual_seed(1)
    mu = torch.softmax(torch.randn(b, k, generator=g), 1).double()
    y0 = torch.nn.functional.one_hot(torch.arange(b) % k, k).double()
    lam = 1 + torch.rand(b, 1, generator=g).double()
    return mu, y0, lam


def test_respaced_timesteps_closed_form():
    assert respaced_timesteps(1000, 10).tolist() == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert torch.equal(respaced_timesteps(1000, 1000), torch.arange(1000))
    with pytest.raises(ValueError, match="diffusion.test_timesteps"):
        respaced_timesteps(1000, 1001)


def test_respaced_schedule_is_the_sub_sequence(sched):
    sub = sched.respaced(10)
    tau = respaced_timesteps(1000, 10)
    assert torch.equal(sub.abar, sched.abar[tau]) and torch.equal(sub.timestep_ids, tau)
    # beta'_k = 1 - abar'_k / abar'_{k-1}; posterior coefficients still sum to one (eq. 6)
    beta = 1 - sub.abar[1:] / sub.abar[:-1]
    assert torch.allclose(sub.posterior_var[1:], (1 - sub.abar[:-1]) * beta / (1 - sub.abar[1:]))
    assert torch.allclose(sub.g0 + sub.g1 + sub.g2, torch.ones(10, dtype=torch.float64))


def test_respaced_with_all_steps_equals_the_full_chain(sched):
    mu, _, lam = inputs()
    eps_fn = random_eps_fn()
    full = sched.sample(eps_fn, mu, lam, 1000, torch.Generator().manual_seed(7))
    respaced = sample_labels(sched, eps_fn, mu, lam, sampler="respaced", steps=1000, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(full, respaced, atol=1e-10)
    assert torch.allclose(sample_labels(sched, eps_fn, mu, lam, sampler="truncated", steps=1000, generator=torch.Generator().manual_seed(7)),
                          full, atol=1e-12)


def test_ddim_is_deterministic_given_its_start(sched):
    mu, _, lam = inputs()
    eps_fn = random_eps_fn(3)
    sub = sched.respaced(10)
    z = torch.randn(mu.shape, generator=torch.Generator().manual_seed(0)).double()
    a = sub.ddim_sample(eps_fn, mu, lam, torch.Generator().manual_seed(1), start_noise=z)
    b = sub.ddim_sample(eps_fn, mu, lam, torch.Generator().manual_seed(2), start_noise=z)
    assert torch.equal(a, b)
    # it draws only the start: the same seed gives the same result through sample_labels
    c = sample_labels(sched, eps_fn, mu, lam, sampler="ddim", steps=10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(c, sub.ddim_sample(eps_fn, mu, lam, start_noise=z))


def test_ddim_step_is_textbook_ddim_on_the_centred_variable(sched):
    """yc = y - mu: yc_{k-1} = sqrt(abar'_{k-1}) yc0_hat + lambda sqrt(1 - abar'_{k-1}) eps_hat (docs/algorithm.md)."""
    mu, _, lam = inputs()
    eps_fn = random_eps_fn(5)
    sub = sched.respaced(6)
    z = torch.randn(mu.shape, generator=torch.Generator().manual_seed(4)).double()
    yc = lam * z
    for k in range(5, -1, -1):
        e = eps_fn(yc + mu, sub.timestep_ids[k].expand(len(mu)))
        yc0 = (yc - lam * (1 - sub.abar[k]).sqrt() * e) / sub.abar[k].sqrt()
        yc = yc0 if k == 0 else sub.abar[k - 1].sqrt() * yc0 + lam * (1 - sub.abar[k - 1]).sqrt() * e
    assert torch.allclose(sub.ddim_sample(eps_fn, mu, lam, start_noise=z), yc + mu, atol=1e-10)


@pytest.mark.parametrize("sampler,steps", [("truncated", 250), ("respaced", 10), ("ddim", 10), ("ddim", 1000)])
def test_perfect_denoiser_recovers_y0(sched, sampler, steps):
    mu, y0, lam = inputs()
    out = sample_labels(sched, oracle(sched, y0, mu, lam), mu, lam, sampler=sampler, steps=steps,
                        generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, y0, atol=1e-6)


def test_unit_lambda_is_the_isotropic_card_chain(sched):
    """lambda = 1 reproduces CARD/DiffMIC's p_sample loop (docs/algorithm.md, "Sampling") written out here."""
    mu, _, _ = inputs()
    eps_fn = random_eps_fn(9)
    steps, seed = 40, 11
    ours = sched.sample(eps_fn, mu, torch.ones(len(mu), 1, dtype=torch.float64), steps,
                       torch.Generator().manual_seed(seed))

    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alphas = 1 - betas
    abar = torch.cumprod(alphas, 0)
    g = torch.Generator().manual_seed(seed)
    y = mu + torch.randn(mu.shape, generator=g).double()
    for i in range(steps - 1, 0, -1):
        e = eps_fn(y, torch.full((len(mu),), i))
        sab, sdev = abar[i].sqrt(), (1 - abar[i]).sqrt()
        y0_hat = (y - (1 - sab) * mu - sdev * e) / sab
        g0 = betas[i] * abar[i - 1].sqrt() / (1 - abar[i])
        g1 = (1 - abar[i - 1]) * alphas[i].sqrt() / (1 - abar[i])
        g2 = 1 + (sab - 1) * (alphas[i].sqrt() + abar[i - 1].sqrt()) / (1 - abar[i])
        var = (1 - abar[i - 1]) * betas[i] / (1 - abar[i])
        y = g0 * y0_hat + g1 * y + g2 * mu + var.sqrt() * torch.randn(mu.shape, generator=g).double()
    e = eps_fn(y, torch.zeros(len(mu), dtype=torch.long))
    card = (y - (1 - abar[0].sqrt()) * mu - (1 - abar[0]).sqrt() * e) / abar[0].sqrt()
    assert torch.allclose(ours, card, atol=1e-9)


def test_truncated_chain_uses_the_full_schedule_indices(sched):
    seen = []
    mu, _, lam = inputs()
    sched.sample(lambda y, t: seen.append(int(t[0])) or torch.zeros_like(y), mu, lam, 5)
    assert seen == [4, 3, 2, 1, 0]
    seen.clear()
    sample_labels(sched, lambda y, t: seen.append(int(t[0])) or torch.zeros_like(y), mu, lam, sampler="respaced", steps=4)
    assert seen == [999, 666, 333, 0]


def test_unknown_sampler_names_the_key(sched):
    mu, _, lam = inputs()
    with pytest.raises(ValueError, match="diffusion.sampler"):
        sample_labels(sched, random_eps_fn(), mu, lam, sampler="plms", steps=10)


def test_vote_readout_majority_and_shares():
    # 3 samples, 2 images, 3 classes; CARD votes for the entry closest to 1 (not the largest)
    y0 = torch.tensor([[[1.0, 0, 0], [0, 3.0, 0.9]],
                       [[0.9, 0.2, 0], [0, 0, 1.0]],
                       [[0, 1.1, 0], [0, 0, 1.2]]])
    out = vote_readout(y0)
    assert out.argmax(1).tolist() == [0, 2]
    assert torch.allclose(out.softmax(1), torch.tensor([[2 / 3, 1 / 3, 0], [0, 0, 1.0]]), atol=1e-5)


def test_respace_start_spans_the_truncated_positions(sched):
    """diffusion.respace_start = N: tau = round(linspace(0, N-1, S)); S = N is DiffMIC's truncated-N chain."""
    assert respaced_timesteps(1000, 4, 250).tolist() == [0, 83, 166, 249]
    mu, y0, lam = inputs()
    eps_fn = random_eps_fn(2)
    truncated = sample_labels(sched, eps_fn, mu, lam, sampler="truncated", steps=40, generator=torch.Generator().manual_seed(3))
    respaced = sample_labels(sched, eps_fn, mu, lam, sampler="respaced", steps=40, generator=torch.Generator().manual_seed(3), start=40)
    assert torch.allclose(truncated, respaced, atol=1e-12)
    for sampler in ("respaced", "ddim"):
        out = sample_labels(sched, oracle(sched, y0, mu, lam), mu, lam, sampler=sampler, steps=10, generator=torch.Generator(),
                            start=250)
        assert torch.allclose(out, y0, atol=1e-6)
    with pytest.raises(ValueError, match="diffusion.test_timesteps"):
        respaced_timesteps(1000, 300, 250)
    with pytest.raises(ValueError, match="diffusion.respace_start"):
        respaced_timesteps(1000, 10, 1001)
