"""The anisotropic label diffusion: schedule, forward process, posterior and samplers.

A scheduler object in the diffusers sense: no nn.Module, no training code. It holds the schedule
(alpha-bar sequence) and implements the math of docs/algorithm.md; the denoiser reaches it only
through an ``eps_fn(y_t, t)`` closure, so image features are computed once per image outside the
sampling loop (docs/algorithm.md, "Sampling").

Notation (docs/algorithm.md, "Schedule and notation"): index i = 0..T-1 (paper step t = i+1);
abar_i = prod_{s<=i} (1 - beta_s); sab = sqrt(abar); sdev = sqrt(1 - abar); mu = the prior network's class probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass

from collections.abc import Callable

import torch

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def linear_betas(timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """beta_i = linspace(beta_start, beta_end, T) (CARD/DiffMIC, the paper's schedule), float64."""
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def antithetic_timesteps(n: int, timesteps: int, generator: torch.Generator | None = None,
                         device: torch.device | str = "cpu") -> torch.Tensor:
    """t and T-1-t in pairs, as CARD draws them (docs/algorithm.md, "Training loop"): lower-variance loss estimates."""
    t = torch.randint(0, timesteps, (n // 2 + 1,), generator=generator)
    return torch.cat([t, timesteps - 1 - t])[:n].to(device)


class ADPMScheduler:
    """Schedule + anisotropic forward process (eq. 5) + posterior + reverse step (eq. 6).

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
        # Posterior q(y_{i-1} | y_i, y0, x) coefficients: lambda leaves g0..g2 unchanged
        # and scales only the variance (docs/algorithm.md, "Posterior and reverse step (eq. 6)").
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
        """Eq. 5: y_i = sab_i y0 + (1 - sab_i) mu + lambda sdev_i eps.  lambda = 1 is CARD."""
        sab = self._at(self.sab, i, y0)
        return sab * y0 + (1 - sab) * mu + lam * self._at(self.sdev, i, y0) * eps

    def predict_start(self, y_t: torch.Tensor, mu: torch.Tensor, eps_hat: torch.Tensor, i: torch.Tensor | int,
                      lam: torch.Tensor | float = 1.0) -> torch.Tensor:
        """Invert eq. 5 for y0 given the predicted unit noise (no clipping), as eq. 6 does."""
        sab = self._at(self.sab, i, y_t)
        return (y_t - (1 - sab) * mu - lam * self._at(self.sdev, i, y_t) * eps_hat) / sab

    def eps_from_start(self, y_t: torch.Tensor, mu: torch.Tensor, y0_hat: torch.Tensor, i: torch.Tensor | int,
                       lam: torch.Tensor | float = 1.0) -> torch.Tensor:
        """The unit noise that eq. 5 implies for a predicted y0 (inverse of ``predict_start``): lets a
        y0-predicting denoiser (``diffusion.prediction=y0``) drive every eps-based sampler unchanged."""
        sab = self._at(self.sab, i, y_t)
        return (y_t - sab * y0_hat - (1 - sab) * mu) / (lam * self._at(self.sdev, i, y_t))

    def posterior(self, y0: torch.Tensor, y_t: torch.Tensor, mu: torch.Tensor, i: int,
                  lam: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(y_{i-1} | y_i, y0, x, lambda) (eq. 6, docs/algorithm.md)."""
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

    def _start(self, mu: torch.Tensor, lam: torch.Tensor | float, generator: torch.Generator | None,
               start_noise: torch.Tensor | None) -> torch.Tensor:
        """y = mu + lambda z, z ~ N(0, I): the chain's starting point (docs/algorithm.md, "Sampling")."""
        z = (torch.randn(mu.shape, generator=generator, device="cpu") if start_noise is None else start_noise)
        return mu + lam * z.to(mu.device, mu.dtype)

    def _t(self, i: int, mu: torch.Tensor) -> torch.Tensor:
        """The network's time index of position i, one per row of the batch."""
        return self.timestep_ids[i].expand(mu.shape[0]).to(mu.device)

    def sample(self, eps_fn: EpsFn, mu: torch.Tensor, lam: torch.Tensor | float, steps: int | None = None,
               generator: torch.Generator | None = None, start_noise: torch.Tensor | None = None) -> torch.Tensor:
        """Ancestral sampling from position steps-1 down to 0; returns y0 (docs/algorithm.md, "Sampling").

        With the full T-step schedule and steps < T this is DiffMIC's truncated chain: it starts at
        y = mu + lambda z (not the true marginal) and uses the T-step posterior.
        On a respaced scheduler (``respaced``) with steps = len(self) it is the respaced chain.
        """
        steps = len(self) if steps is None else steps
        if not 1 <= steps <= len(self):
            raise ValueError(f"diffusion.test_timesteps: {steps} steps on a {len(self)}-position schedule")
        y = self._start(mu, lam, generator, start_noise)
        for i in range(steps - 1, -1, -1):
            y = self.step(eps_fn(y, self._t(i, mu)), i, y, mu, lam, generator)
        return y

    def ddim_sample(self, eps_fn: EpsFn, mu: torch.Tensor, lam: torch.Tensor | float,
                    generator: torch.Generator | None = None, start_noise: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """Deterministic DDIM (eta = 0) over every position of this scheduler (docs/algorithm.md, "Sampling").

        On the centred variable yc = y - mu the process is a standard DDPM with noise scale lambda:
        yc_i = sab_i yc_0 + lambda sdev_i eps. One step: y0_hat from eq. 5 inverted, then
          yc_{i-1} = sab_{i-1} yc0_hat + lambda sdev_{i-1} eps_hat   (== add_noise(y0_hat, mu, eps_hat, i-1)).
        The only randomness is the starting point; no noise is drawn per step.
        """
        y = self._start(mu, lam, generator, start_noise)
        for i in range(len(self) - 1, -1, -1):
            eps_hat = eps_fn(y, self._t(i, mu))
            y0_hat = self.predict_start(y, mu, eps_hat, i, lam)
            y = y0_hat if i == 0 else self.add_noise(y0_hat, mu, eps_hat, i - 1, lam)
        return y

    def respaced(self, steps: int, start: int = 0) -> "ADPMScheduler":
        """The S-position sub-schedule abar'_k = abar_{tau_k}, tau = respaced_timesteps (docs/algorithm.md, "Sampling").

        beta'_k = 1 - abar'_k / abar'_{k-1} follows in __init__; the network still sees tau_k.
        ``start`` > 0 spans positions 0..start-1 only (see ``respaced_timesteps``).
        """
        tau = respaced_timesteps(len(self), steps, start)
        return ADPMScheduler(self.abar[tau], self.timestep_ids[tau])


def respaced_timesteps(timesteps: int, steps: int, start: int = 0) -> torch.Tensor:
    """tau_k = round(linspace(0, N-1, S)), k = 0..S-1, N = start or T (docs/algorithm.md, "Sampling"); distinct as S <= N.

    N = T is the plain respaced schedule (the chain starts at T-1, where the forward marginal is
    ~N(mu, lambda^2) like the start mu + lambda z). N = 250 starts where DiffMIC's truncated chain
    starts: the same over-dispersed start, its 250 positions visited in S steps (``diffusion.respace_start``).
    """
    span = start or timesteps
    if not 1 <= span <= timesteps:
        raise ValueError(f"diffusion.respace_start: {start} must be in [0, {timesteps}]")
    if not 1 <= steps <= span:
        raise ValueError(f"diffusion.test_timesteps: {steps} must be in [1, {span}] for a respaced sampler")
    return torch.linspace(0, span - 1, steps, dtype=torch.float64).round().long()


SAMPLERS = ("truncated", "respaced", "ddim")


@dataclass(frozen=True)
class SamplingSpec:
    """How labels are sampled at test time, bound once when a model is built (``diffusion.*`` keys).

    ``samples`` > 1 draws that many chains per image and reads out CARD's majority vote;
    ``respace_start``: first position of the respaced / DDIM schedules (0 = T).
    """
    sampler: str = "truncated"
    steps: int = 250
    samples: int = 1
    respace_start: int = 0


def sample_labels(scheduler: ADPMScheduler, eps_fn: EpsFn, mu: torch.Tensor, lam: torch.Tensor | float, *,
                  sampler: str, steps: int, generator: torch.Generator | None = None,
                  start: int = 0) -> torch.Tensor:
    """y0 by one of the samplers of docs/algorithm.md ("Sampling") with ``steps`` network calls.

    truncated: DiffMIC's chain (T-step posterior, positions steps-1..0; the lineage default, 250).
    respaced:  ancestral sampling on the S-step respaced schedule (starts at tau = T-1, or at
               ``start``-1 when ``start`` > 0; respaced with S = start is the truncated-S chain).
    ddim:      eta = 0 on the same respaced schedule.
    """
    if sampler == "truncated":
        return scheduler.sample(eps_fn, mu, lam, steps, generator)
    if sampler == "respaced":
        return scheduler.respaced(steps, start).sample(eps_fn, mu, lam, None, generator)
    if sampler == "ddim":
        return scheduler.respaced(steps, start).ddim_sample(eps_fn, mu, lam, generator)
    raise ValueError(f"diffusion.sampler: {sampler!r} is not one of {', '.join(SAMPLERS)}")


def vote_readout(y0: torch.Tensor) -> torch.Tensor:
    """CARD's majority vote over N samples (docs/algorithm.md, "Read-out"): (N, B, K) samples -> (B, K) scores.

    Each sample votes for argmax softmax(-(y0 - 1)^2), i.e. the class whose entry is closest to 1.
    Returned: log of the vote share (plus 1e-6 x the mean CARD probability, which only breaks ties),
    so argmax of the result is the majority vote and its softmax is (to 1e-6) the vote share.
    """
    n, _, k = y0.shape
    probs = torch.softmax(-(y0.float() - 1) ** 2, dim=-1)
    votes = torch.nn.functional.one_hot(probs.argmax(-1), k).float().sum(0)    # (B, K)
    share = votes / n
    return share.clamp_min(1e-12).log() + 1e-6 * probs.mean(0)
