"""The Bayes-optimal denoiser of the anisotropic forward process: ADPM's sampler with a perfect network.

For one image whose label posterior pi (over the K classes) is known, eq. 5 (docs/algorithm.md) makes
y_t a mixture: class j with probability pi_j, then y_t ~ N(m_j, (lambda_j sdev_t)^2 I) with
m_j = sab_t e_j + (1 - sab_t) mu. The MSE-optimal y0 prediction is the mixture's posterior mean
E[y0 | y_t] = sum_j w_j e_j = w, with
    log w_j = log pi_j - K log lambda_j - ||y_t - m_j||^2 / (2 lambda_j^2 sdev_t^2) + const.
That is what the y0 network of ``diffusion.prediction=y0`` converges to with unlimited data and
capacity; running ADPM's samplers on it shows what the anisotropic noise itself does to a decision,
free of any training noise (benchmarks/oracle.py, docs/model.md "What anisotropy can do").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .scheduler import ADPMScheduler, sample_labels
from .noise import estimated_noise_level


def oracle_start(y_t: torch.Tensor, mu: torch.Tensor, posterior: torch.Tensor, stds: torch.Tensor,
                 sab: float | torch.Tensor, sdev: float | torch.Tensor) -> torch.Tensor:
    """E[y0 | y_t, x] (B, K) for label posteriors ``posterior`` (B, K), prior means ``mu`` (B, K) and the
    per-class noise std factors ``stds`` (K,) (lambda_j, or sqrt(lambda_j) with noise.apply=variance)."""
    k = y_t.shape[1]
    eye = torch.eye(k, dtype=y_t.dtype, device=y_t.device)
    means = sab * eye + (1 - sab) * mu.unsqueeze(1)                 # (B, class j, K): m_j
    d2 = ((y_t.unsqueeze(1) - means) ** 2).sum(-1)                  # (B, K)
    var = (stds.to(y_t) * sdev) ** 2                                # (K,)
    log_w = posterior.to(y_t).log() - k * stds.to(y_t).log() - d2 / (2 * var)
    return F.softmax(log_w, dim=1)


def oracle_sample(scheduler: ADPMScheduler, posterior: torch.Tensor, mu: torch.Tensor, stds: torch.Tensor, *,
                  sampler: str = "truncated", steps: int = 250, test_rule: str = "expected",
                  generator: torch.Generator | None = None, respace_start: int = 0) -> torch.Tensor:
    """y0 from ADPM's sampler (docs/algorithm.md, "Sampling") driven by ``oracle_start``, as ``ADPM.sample`` drives its
    y0 network: lambda_hat from ``mu`` (eq. 18), the start mu + lambda_hat z, every step eps-converted.
    ``scheduler`` is the full T-step one: the oracle reads it at the network's time index."""
    lam_hat = estimated_noise_level(mu, stds, test_rule)

    def eps_fn(y_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        i = int(t[0])
        y0 = oracle_start(y_t, mu, posterior, stds, scheduler.sab[i].item(), scheduler.sdev[i].item())
        return scheduler.eps_from_start(y_t, mu, y0, t, lam_hat)

    return sample_labels(scheduler, eps_fn, mu, lam_hat, sampler=sampler, steps=steps, generator=generator,
                         start=respace_start)
