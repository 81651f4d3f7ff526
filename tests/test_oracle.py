"""The Bayes-optimal denoiser of eq. 5 (adpm_dist/diffusion/oracle.py) and what ADPM's samplers do with it."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from adpm_dist.diffusion.scheduler import ADPMScheduler
from adpm_dist.diffusion.oracle import oracle_sample, oracle_start

ROOT = Path(__file__).resolve().parents[1]
SCHEDULER = ADPMScheduler.linear(1000)


def posterior_batch(pi, n):
    return torch.tensor(pi, dtype=torch.float64).expand(n, len(pi)).clone()


def test_no_signal_returns_the_posterior_and_no_noise_the_nearest_vertex():
    pi = posterior_batch([0.5, 0.3, 0.2], 4)
    y = torch.randn(4, 3, dtype=torch.float64)
    ones = torch.ones(3, dtype=torch.float64)
    # sab = 0: every class has the same mean mu, isotropic noise: y_t says nothing, E[y0] = pi
    assert torch.allclose(oracle_start(y, pi, pi, ones, sab=0.0, sdev=1.0), pi)
    # anisotropic, y_t exactly at mu (d2 = 0): w_j = pi_j lambda_j^-K / sum (the Gaussian normalisers)
    lam = torch.tensor([1.0, 1.5, 2.0], dtype=torch.float64)
    w = oracle_start(pi.clone(), pi, pi, lam, sab=0.0, sdev=1.0)
    expected = pi[0] * lam ** -3
    assert torch.allclose(w[0], expected / expected.sum())
    # almost no noise: the vertex y_t sits on, whatever the posterior (if it gives that class any mass)
    near = torch.tensor([[0.02, 0.97, 0.01]], dtype=torch.float64)
    w = oracle_start(near, pi[:1], pi[:1], lam, sab=0.9999, sdev=0.01)
    assert torch.allclose(w, torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("sampler,steps", [("respaced", 100), ("ddim", 50)])
def test_isotropic_oracle_chains_sample_the_posterior(sampler, steps):
    """With exact noise predictions and the start of the true marginal (~N(mu, I) at T-1), the reverse
    process draws labels from the posterior: the DDPM guarantee, checked to 4 standard errors."""
    n, pi = 4000, [0.6, 0.3, 0.1]
    post = posterior_batch(pi, n)
    y0 = oracle_sample(SCHEDULER, post, post.clone(), torch.ones(3, dtype=torch.float64), sampler=sampler,
                       steps=steps, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(y0.argmax(1), minlength=3).double() / n
    se = (torch.tensor(pi) * (1 - torch.tensor(pi)) / n).sqrt()
    assert ((freq - torch.tensor(pi)).abs() < 4 * se).all(), freq


def test_anisotropy_widens_the_tail_basin():
    """The mechanism ADPM claims, with a perfect denoiser: a larger noise scale for the tail class makes
    the sampler pick it more often at the same posterior (head 0.7, tail 0.3; lambda_tail 1.8)."""
    n = 2000
    post = torch.zeros(n, 4, dtype=torch.float64)
    post[:, 0], post[:, 3] = 0.7, 0.3
    shares = []
    for lam_tail in (1.0, 1.8):
        stds = torch.tensor([1.0, 1.0, 1.0, lam_tail], dtype=torch.float64)
        y0 = oracle_sample(SCHEDULER, post, post.clone(), stds, sampler="truncated", steps=250,
                           generator=torch.Generator().manual_seed(0))
        shares.append((y0.argmax(1) == 3).double().mean().item())
    assert 0.25 < shares[0] < 0.40 and shares[1] > shares[0] + 0.15, shares


def test_benchmark_table(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import oracle as bench

    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Other\n\nkept\n")
    png = tmp_path / "share.png"
    assert bench.main(["--alphas", "0", "1/2", "--samplers", "truncated-20", "--chains", "50", "--grid", "4",
                       "--pair-chains", "20", "--results", str(results), "--plot", str(png)]) == 0
    assert png.stat().st_size > 10_000
    text = results.read_text()
    assert "kept" in text and bench.MARKERS[0] in text and "| 1/2 |" in text and "truncated-20" in text
    assert "| logit adjustment, tau = 1 | 0." in text  # the every-class table
    assert bench.crossing(np.array([0.1, 0.3, 0.5]), np.array([0.2, 0.4, 0.6])) == pytest.approx(0.4)
    assert bench.crossing(np.array([0.1, 0.3]), np.array([0.1, 0.2])) == 1.0
