"""The anisotropic label diffusion: schedule, forward process, posterior and samplers.

A scheduler object in the diffusers sense: no nn.Module, no training code. It holds the schedule
(alpha-bar sequence) and implements the math of ADPM_SPEC 1 and 3; the denoiser reaches it only
through an ``eps_fn(y_t, t)`` closure, so image features are computed once per image outside the
sampling loop (ADPM_SPEC 3.8).

Notation (ADPM_SPEC 0): index i = 0..T-1 (paper step t = i+1); abar_i = prod_{s<=i} (1 - beta_s);
sab = sqrt(abar); sdev = sqrt(1 - abar); mu = the prior network's class probabilities.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def linear_betas(timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """beta_i = linspace(beta_start, beta_end, T) (CARD/DiffMIC, ADPM_SPEC 0), float64."""
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def antithetic_timesteps(n: int, timesteps: int, generator: torch.Generator | None = None,
                         device: torch.device | str = "cpu") -> torch.Tensor:
    """t and T-1-t in pairs, as CARD draws them (ADPM_SPEC 1.6): lower-variance loss estimates."""
    t = torch.randint(0, timesteps, (n // 2 + 1,), generator=generator)
    return torch.cat([t, timesteps - 1 - t])[:n].to(device)


class ADPMScheduler:
    """Schedule + anisotropic forward process (eq. 5) + posterior (ADPM_SPEC 3.1) + reverse step (eq. 6).

    Built from a cumulative-product sequence ``abar`` and the network time index of each position
    (``timestep_ids``), so a respaced sub-schedule is the same object with fewer positions.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, timestep_ids: torch.Tensor | None = None):
        abar = alphas_cumprod.to(torch.float64)
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        alphas = abar / abar_prev                      # per-position alpha (== 1 - beta_i when unspaced)
        betas = 1 - alphas
        self.abar = abar
        self.sab = abar.sqrt()
        self.sdev = (1 - abar).sqrt()
        self.timestep_ids = (torch.arange(len(abar)) if timestep_ids is None else timestep_ids.long())
        # Posterior q(y_{i-1} | y_i, y0, x) coefficients (ADPM_SPEC 1.2): lambda leaves g0..g2 unchanged
        # and scales only the variance (ADPM_SPEC 3.1).
        sab_prev = abar_prev.sqrt()
        self.g0 = betas * sab_prev / (1 - abar)
        self.g1 = (1 - abar_prev) * alphas.sqrt() / (1 - abar)
        self.g2 = 1 + (self.sab - 1) * (alphas.sqrt() + sab_prev) / (1 - abar)
        self.posterior_var = (1 - abar_prev) * betas / (1 - abar)

    @classmethod
    def linear(cls, timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "ADPMScheduler":
        return cls(torch.cumprod(1 - linear_betas(timesteps, beta_start, beta_end), dim=0))

    def __len__(self) -> int:
        return len(self.abar)

    @staticmethod
    def _at(values: torch.Tensor, i: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """values[i] shaped to broadcast against a (B, K) label tensor."""
        if isinstance(i, int):
            return values[i].to(like.device, like.dtype)
        return values.to(like.device)[i].to(like.dtype).unsqueeze(-1)

    def add_noise(self, y0: torch.Tensor, mu: torch.Tensor, eps: torch.Tensor, i: torch.Tensor | int,
                  lam: torch.Tensor | float = 1.0) -> torch.Tensor:
        """Eq. 5 (ADPM_SPEC 3.1): y_i = sab_i y0 + (1 - sab_i) mu + lambda sdev_i eps.  lambda = 1 is CARD."""
        sab = self._at(self.sab, i, y0)
        return sab * y0 + (1 - sab) * mu + lam * self._at(self.sdev, i, y0) * eps

    def predict_start(self, y_t: torch.Tensor, mu: torch.Tensor, eps_hat: torch.Tensor, i: torch.Tensor | int,
                      lam: torch.Tensor | float = 1.0) -> torch.Tensor:
        """Invert eq. 5 for y0 given the predicted unit noise (ADPM_SPEC 3.1, no clipping)."""
        sab = self._at(self.sab, i, y_t)
        return (y_t - (1 - sab) * mu - lam * self._at(self.sdev, i, y_t) * eps_hat) / sab

    def posterior(self, y0: torch.Tensor, y_t: torch.Tensor, mu: torch.Tensor, i: int,
                  lam: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(y_{i-1} | y_i, y0, x, lambda) (ADPM_SPEC 1.2 and 3.1)."""
        mean = (self._at(self.g0, i, y0) * y0 + self._at(self.g1, i, y0) * y_t + self._at(self.g2, i, y0) * mu)
        var = lam ** 2 * self._at(self.posterior_var, i, y0)
        return mean, var

    def step(self, eps_hat: torch.Tensor, i: int, y_t: torch.Tensor, mu: torch.Tensor,
             lam: torch.Tensor | float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """One reverse step (eq. 6): y_{i-1} ~ q(. | y_i, y0_hat); at i = 0 return y0_hat itself."""
        y0_hat = self.predict_start(y_t, mu, eps_hat, i, lam)
        if i == 0:
            return y0_hat
        mean, var = self.posterior(y0_hat, y_t, mu, i, lam)
        z = torch.randn(y_t.shape, generator=generator, device="cpu").to(y_t.device, y_t.dtype)
        return mean + var.sqrt() * z

    def sample(self, eps_fn: EpsFn, mu: torch.Tensor, lam: torch.Tensor | float, steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Run the chain from position steps-1 down to 0 and return y0 (ADPM_SPEC 3.8).

        With the full T-step schedule and steps < T this is DiffMIC's truncated chain: it starts at
        y = mu + lambda z (not the true marginal) and uses the T-step posterior (ADPM_SPEC 1.4).
        """
        steps = len(self) if steps is None else steps
        z = torch.randn(mu.shape, generator=generator, device="cpu").to(mu.device, mu.dtype)
        y = mu + lam * z
        for i in range(steps - 1, -1, -1):
            t = self.timestep_ids[i].expand(mu.shape[0]).to(mu.device)
            y = self.step(eps_fn(y, t), i, y, mu, lam, generator)
        return y
