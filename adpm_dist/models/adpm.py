"""ADPM as one nn.Module: the prior network and the denoiser together.

One module with one optimizer (parameter groups) keeps DDP and DeepSpeed ZeRO-3 simple: the whole
training step is ``forward`` (so the wrapper sees every parameter), and sampling goes through
``sample`` on the unwrapped module.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..diffusion import ADPMScheduler
from ..losses import diffusion_loss
from ..noise import class_noise_levels, estimated_noise_level
from .denoiser import Denoiser, ImageEncoder
from .prior import PriorNetwork


class ADPM(nn.Module):
    def __init__(self, prior: PriorNetwork, denoiser: Denoiser, scheduler: ADPMScheduler, levels: torch.Tensor,
                 *, forward_prior: bool = True, mmd_weight: float = 0.5):
        super().__init__()
        self.prior, self.denoiser, self.scheduler = prior, denoiser, scheduler
        self.register_buffer("levels", levels.float())  # lambda_j of eq. 14, saved with the weights
        self.forward_prior, self.mmd_weight = forward_prior, mmd_weight

    @property
    def num_classes(self) -> int:
        return self.levels.numel()

    def prior_means(self, images: torch.Tensor) -> list[torch.Tensor]:
        """mu_f, mu_g, mu_l = softmax of the eval-mode prior, without gradient (ADPM_SPEC 3.7 step 1)."""
        was_training = self.prior.training
        self.prior.eval()
        with torch.no_grad():
            out = self.prior(images)
        self.prior.train(was_training)
        logits = [out.fused, out.global_, out.local] if self.forward_prior else [out.fused]
        return [F.softmax(z.float(), dim=1) for z in logits]

    def forward(self, images: torch.Tensor, labels: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                joint: bool = True) -> dict[str, torch.Tensor]:
        """One training step's losses (ADPM_SPEC 3.7): eq. 17 on the chains, then CE on the prior.

        The two losses touch disjoint parameters (prior means are computed under no_grad), so one
        backward of their sum equals DiffMIC's two separate steps. ``joint=False`` is the prior warm-up.
        """
        losses = {}
        if joint:
            mus = self.prior_means(images)
            y0 = F.one_hot(labels, self.num_classes).float()
            lam = self.levels[labels].unsqueeze(1)                      # train-time lambda_y (ADPM_SPEC 4.4)
            n = len(mus)
            # eq. 16: every chain shares eps and lambda_y; they differ only in their prior mean.
            y_t = torch.cat([self.scheduler.add_noise(y0, mu, eps, t, lam) for mu in mus])
            feats = self.denoiser.encode(images)                        # once for all chains
            eps_hat = self.denoiser(feats.repeat(n), y_t, torch.cat(mus), t.repeat(n)).float().chunk(n)
            losses["diffusion"] = diffusion_loss(eps, *eps_hat, mmd_weight=self.mmd_weight)
        losses["prior_ce"] = F.cross_entropy(self.prior(images).fused.float(), labels)
        losses["loss"] = sum(losses.values())
        return losses

    @torch.no_grad()
    def sample(self, images: torch.Tensor, *, sampler: str = "truncated", steps: int = 250,
               test_rule: str = "expected", generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Denoised label vectors y0 and the prior's probabilities (ADPM_SPEC 3.8).

        Prior, lambda_hat and image features are computed once here; the loop only runs the MLP.
        """
        mu = F.softmax(self.prior(images).fused.float(), dim=1)
        lam = estimated_noise_level(mu, self.levels, test_rule)               # eq. 18
        feats = self.denoiser.encode(images)

        def eps_fn(y_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.denoiser(feats, y_t, mu, t).float()

        if sampler != "truncated":
            raise ValueError(f"diffusion.sampler: {sampler!r} is not implemented")
        return self.scheduler.sample(eps_fn, mu, lam, steps, generator), mu


def build_model(cfg: Config, class_counts: list[int]) -> ADPM:
    """The model described by ``cfg`` for a training set with these per-class counts."""
    k = len(class_counts)
    m, d = cfg.model, cfg.diffusion
    levels = class_noise_levels(class_counts, cfg.noise.alpha, cfg.noise.beta, cfg.noise.formula, cfg.noise.n_floor)
    prior = PriorNetwork(k, m.backbone, m.backbone_level, m.pretrained)
    encoder = ImageEncoder(m.encoder, cfg.data.image_size, m.token_dim, m.hidden_dim, m.encoder_level,
                           m.encoder_pretrained)
    denoiser = Denoiser(k, encoder=encoder, hidden_dim=m.hidden_dim, token_dim=m.token_dim, heads=m.heads,
                        timesteps=d.timesteps, reverse_prior=m.reverse_prior, feature_product=m.feature_product)
    scheduler = ADPMScheduler.linear(d.timesteps, d.beta_start, d.beta_end)
    return ADPM(prior, denoiser, scheduler, levels, forward_prior=m.forward_prior, mmd_weight=d.mmd_weight)
