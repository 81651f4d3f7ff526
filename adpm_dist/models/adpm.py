"""ADPM as one nn.Module: the prior network and the denoiser together.

One module with one optimizer (parameter groups) keeps DDP and DeepSpeed ZeRO-3 simple: the whole
training step is ``forward`` (so the wrapper sees every parameter), and sampling goes through
``sample`` on the unwrapped module.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..diffusion.scheduler import ADPMScheduler, SamplingSpec, sample_labels, vote_readout
from ..diffusion.adjusted import adjusted_prior, adjustment_shift
from ..diffusion.losses import diffusion_loss
from ..diffusion.noise import NoiseLaw, estimated_noise_level, noise_std, soft_counts
from .denoiser import Denoiser, ImageEncoder, ImageFeatures
from .prior import PriorNetwork, PriorOutput


class ADPM(nn.Module):
    def __init__(self, prior: PriorNetwork, denoiser: Denoiser, scheduler: ADPMScheduler, levels: torch.Tensor,
                 *, forward_prior: bool = True, mmd_weight: float = 0.5, noise: NoiseLaw = NoiseLaw(),
                 sampling: SamplingSpec = SamplingSpec(),
                 prediction: str = "eps", prior_logit_shift: torch.Tensor | None = None, freeze_prior: bool = False,
                 prior_mean: str = "eval", chain_logit_shift: torch.Tensor | None = None):
        super().__init__()
        self.prior, self.denoiser, self.scheduler = prior, denoiser, scheduler
        self.prediction = prediction  # eps (paper) or y0 = mu + denoiser output (diffusion.prediction)
        # Added to the fused logits in the prior's training loss only: zeros = DCG's CE (the paper);
        # log n_j = balanced softmax (model.prior_loss), so mu = softmax(fused) is a class-balanced prior.
        shift = torch.zeros(len(levels)) if prior_logit_shift is None else prior_logit_shift
        self.register_buffer("prior_logit_shift", shift.float())
        self.register_buffer("levels", levels.float())  # lambda_j of eq. 14, saved with the weights
        self.forward_prior, self.mmd_weight = forward_prior, mmd_weight
        self.freeze_prior = freeze_prior  # joint steps skip the prior's CE (train.freeze_prior: CARD's frozen f_phi)
        self.noise = noise        # eq. 14 parameters (for soft-count levels), std|variance, eq. 18's rule
        self.sampling = sampling  # sampler, steps, samples: prediction needs only images and a seed
        if prior_mean not in ("eval", "train_batch"):
            raise ValueError(f"model.prior_mean: {prior_mean!r} is not one of eval, train_batch")
        # eval: mu from a second, eval-mode prior pass (the paper); train_batch: from the CE's own train-mode
        # pass, detached (BatchNorm on batch statistics; saves the second pass, about 1/3 of a prior step)
        self.prior_mean = prior_mean
        # Added to the prior's logits where they become the chains' means (training and sampling alike):
        # -tau log pi = the logit-adjusted prior (method=adpm_adjusted_chain, diffusion/adjusted.py). Only
        # then a buffer (saved with the weights: a checkpoint is rebuilt with dummy counts), so that plain
        # ADPM checkpoints keep exactly their keys.
        if chain_logit_shift is not None:
            self.register_buffer("chain_logit_shift", chain_logit_shift.float())
        else:
            self.chain_logit_shift = None

    @property
    def num_classes(self) -> int:
        return self.levels.numel()

    def prior_eval(self, images: torch.Tensor) -> PriorOutput:
        """The eval-mode prior without gradient (docs/algorithm.md, "Training loop")."""
        was_training = self.prior.training
        self.prior.eval()
        with torch.no_grad():
            out = self.prior(images)
        self.prior.train(was_training)
        return out

    def chain_means(self, out: PriorOutput) -> list[torch.Tensor]:
        """mu_f, mu_g, mu_l = softmax of each branch (eq. 16); only mu_f without the forward prior (V2).
        With a chain shift every branch's mean is the adjusted prior softmax(z - tau log pi)."""
        logits = [out.fused, out.global_, out.local] if self.forward_prior else [out.fused]
        return [self.chain_mean(z) for z in logits]

    def chain_mean(self, logits: torch.Tensor) -> torch.Tensor:
        """The mean a chain diffuses toward for these prior logits: softmax, or the adjusted prior."""
        if self.chain_logit_shift is None:
            return F.softmax(logits.float(), dim=1)
        return adjusted_prior(logits, self.chain_logit_shift)

    def prior_means(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.chain_means(self.prior_eval(images))

    def forward(self, images: torch.Tensor, labels: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                joint: bool = True) -> dict[str, torch.Tensor]:
        """One training step's losses (docs/algorithm.md, "Training loop"): eq. 17 on the chains, then CE on the prior.

        The two losses touch disjoint parameters (prior means are computed under no_grad), so one
        backward of their sum equals DiffMIC's two separate steps. ``joint=False`` is the prior warm-up.
        With ``prior_mean="train_batch"`` the means and the shared feature map come from the CE's own
        train-mode pass, detached (one prior pass per step instead of two); a frozen prior keeps eval.
        """
        losses = {}
        train_ce = not (joint and self.freeze_prior)  # a frozen prior must not even run in train mode (BN statistics)
        prior_train = self.prior(images) if train_ce and joint and self.prior_mean == "train_batch" else None
        if joint:
            prior_out = self.prior_eval(images) if prior_train is None else detached(prior_train)
            mus = self.chain_means(prior_out)
            y0 = F.one_hot(labels, self.num_classes).float()
            lam = noise_std(self.levels[labels], self.noise.apply).unsqueeze(1)  # true-label lambda (eq. 16)
            n = len(mus)
            # eq. 16: every chain shares eps and lambda_y; they differ only in their prior mean.
            y_t = torch.cat([self.scheduler.add_noise(y0, mu, eps, t, lam) for mu in mus])
            feats = self.encode(images, prior_out)                      # once for all chains
            out = self.denoiser(feats.repeat(n), y_t, torch.cat(mus), t.repeat(n)).float()
            if self.prediction == "y0":  # eq. 17 with y0 in place of eps: MSE on the fused chain, MMD on the others
                preds, target = (torch.cat(mus) + out).chunk(n), y0
            else:
                preds, target = out.chunk(n), eps
            losses["diffusion"] = diffusion_loss(target, *preds, mmd_weight=self.mmd_weight)
        if train_ce:
            fused = (prior_train if prior_train is not None else self.prior(images)).fused
            losses["prior_ce"] = F.cross_entropy(fused.float() + self.prior_logit_shift, labels)
        losses["loss"] = sum(losses.values())
        return losses

    def encode(self, images: torch.Tensor, prior_out: PriorOutput | None = None) -> ImageFeatures:
        """The denoiser's image features, whichever encoder it has (``model.encoder: prior`` shares the
        prior's global map: pass ``prior_out`` if the prior already ran, else it runs here)."""
        shared = None
        if self.denoiser.shares_prior_features:
            shared = prior_out.features if prior_out is not None else self.prior.features(images)
        return self.denoiser.encode(images, shared)

    def predicted_noise(self, feats: ImageFeatures, y_t: torch.Tensor, mu: torch.Tensor, t: torch.Tensor,
                        lam: torch.Tensor) -> torch.Tensor:
        """The denoiser's eps estimate at (y_t, t), whichever target it was trained on (``y0`` form:
        converted through the forward process); every reverse chain (sample, report tsne) steps on this."""
        out = self.denoiser(feats, y_t, mu, t).float()
        if self.prediction == "y0":  # t is the network's time index = the index into the full schedule
            return self.scheduler.eps_from_start(y_t, mu, mu + out, t, lam)
        return out

    @torch.no_grad()
    def prior_probs(self, images: torch.Tensor) -> torch.Tensor:
        """mu = softmax(fused prior logits): the prior mean and the prior-alone prediction."""
        return F.softmax(self.prior(images).fused.float(), dim=1)

    def levels_from_counts(self, counts: torch.Tensor) -> torch.Tensor:
        """Eq. 14 with this model's noise settings on other (e.g. soft test) counts."""
        return self.noise.levels(counts.detach().double().cpu()).to(
            self.levels.device)

    @torch.no_grad()
    def soft_count_levels(self, batches: Iterable[dict], device: torch.device | str,
                          reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """lambda_j re-estimated on the evaluated images (eq. 18, ``noise.test_levels=soft_counts``).

        Pass 1 of 2 over ``batches`` (prior only): n_hat_j = sum_x p_j(x), summed over ranks with
        ``reduce_sum`` (each rank sees disjoint images), then eq. 14. Pass 2 is ``sample(levels=...)``.
        """
        total = torch.zeros(self.num_classes, device=device)
        for batch in batches:
            total += soft_counts(self.prior_probs(batch["image"].to(device)))
        if reduce_sum is not None:
            total = reduce_sum(total)
        return self.levels_from_counts(total)

    @torch.no_grad()
    def sample(self, images: torch.Tensor, *, generator: torch.Generator | None = None,
               levels: torch.Tensor | None = None, cache_features: bool = True, test_rule: str | None = None,
               **overrides) -> tuple[torch.Tensor, torch.Tensor]:
        """Denoised label vectors y0 and the prior's probabilities (docs/algorithm.md, "Sampling").

        Prior, lambda_hat (eq. 18, from ``levels`` or the training lambda_j) and image features are
        computed once here; the loop only runs the MLP. ``cache_features=False`` re-runs the image
        encoder at every step as DiffMIC does (same result in eval mode; for benchmarks and tests).
        ``samples`` > 1 draws that many chains per image and returns CARD's vote (``vote_readout``):
        argmax is the majority class, softmax the vote share. ``respace_start``: first position of the
        respaced / DDIM schedules (0 = T; ``diffusion.respace_start``). Sampler, steps, samples and
        respace_start come from ``self.sampling`` (the config's); ``overrides`` replace some for one call
        (prediction with another sampler, tests), ``test_rule`` eq. 18's rule.
        """
        spec = replace(self.sampling, **overrides)
        sampler, steps, samples = spec.sampler, spec.steps, spec.samples
        test_rule = test_rule or self.noise.test_rule
        prior_out = self.prior(images)
        # eq. 18 estimates the image's class from the prior's own posterior (the training distribution, as
        # lambda_j was set from training counts); the chain starts from, and is conditioned on, its mean mu,
        # which is that posterior or (chain shift) the adjusted prior. Returned as the prior block.
        posterior = F.softmax(prior_out.fused.float(), dim=1)
        mu = self.chain_mean(prior_out.fused)
        lam = noise_std(estimated_noise_level(posterior, self.levels if levels is None else levels, test_rule),
                        self.noise.apply)
        mu_n, lam_n = mu.repeat(samples, 1), lam.repeat(samples, 1)
        if cache_features:
            feats = self.encode(images, prior_out).repeat(samples)
        else:
            tiled = images.repeat(samples, 1, 1, 1)

        def eps_fn(y_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            f = feats if cache_features else self.encode(tiled)    # DiffMIC: the encoder at every step
            return self.predicted_noise(f, y_t, mu_n, t, lam_n)

        y0 = sample_labels(self.scheduler, eps_fn, mu_n, lam_n, sampler=sampler, steps=steps, generator=generator,
                           start=spec.respace_start)
        if samples > 1:
            y0 = vote_readout(y0.view(samples, *mu.shape))
        return y0, mu


def detached(out: PriorOutput) -> PriorOutput:
    """The prior's outputs cut from its graph: the diffusion loss trains the denoiser only, never the prior."""
    cut = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in vars(out).items()}
    return PriorOutput(**cut)


def noise_law(cfg: Config) -> NoiseLaw:
    n = cfg.noise
    return NoiseLaw(alpha=n.alpha, beta=n.beta, formula=n.formula, n_floor=n.n_floor, apply=n.apply,
                    test_rule=n.test_rule)


def sampling_spec(cfg: Config) -> SamplingSpec:
    d = cfg.diffusion
    return SamplingSpec(sampler=d.sampler, steps=d.test_timesteps, samples=d.samples, respace_start=d.respace_start)


def build_prior(cfg: Config, num_classes: int) -> PriorNetwork:
    """The DCG prior network of ``cfg.model`` (ADPM's, and ``method=prior``'s on its own)."""
    m = cfg.model
    return PriorNetwork(num_classes, m.backbone, m.backbone_level, m.pretrained, local_backbone=m.local_backbone,
                        local_level=m.local_level, local_pretrained=m.local_pretrained, crop_size=m.crop_size,
                        num_crops=m.num_crops, crop_channels=m.crop_channels)


def build_model(cfg: Config, class_counts: list[int], chain_tau: float | None = None) -> ADPM:
    """The model described by ``cfg`` for a training set with these per-class counts. ``chain_tau``: the
    chains diffuse toward the logit-adjusted prior with this tau (method=adpm_adjusted_chain); None: ADPM's."""
    k = len(class_counts)
    m, d = cfg.model, cfg.diffusion
    noise, sampling = noise_law(cfg), sampling_spec(cfg)
    levels = noise.levels(class_counts)
    prior = build_prior(cfg, k)
    encoder = None
    if m.reverse_prior or m.feature_product:  # otherwise the denoiser never sees the image
        # model.encoder=prior: no backbone of its own, project the prior's (detached) global feature map
        own = None if m.encoder == "prior" else m.encoder
        encoder = ImageEncoder(own, cfg.data.image_size, m.token_dim, m.hidden_dim, m.encoder_level,
                               m.encoder_pretrained, tokens=m.reverse_prior, pooled=m.feature_product,
                               channels=prior.features.channels, reduction=prior.features.reduction)
    denoiser = Denoiser(k, encoder=encoder, hidden_dim=m.hidden_dim, token_dim=m.token_dim, heads=m.heads,
                        timesteps=d.timesteps, reverse_prior=m.reverse_prior, feature_product=m.feature_product,
                        zero_output=d.prediction == "y0")
    scheduler = ADPMScheduler.linear(d.timesteps, d.beta_start, d.beta_end)
    return ADPM(prior, denoiser, scheduler, levels, forward_prior=m.forward_prior, mmd_weight=d.mmd_weight,
                noise=noise, sampling=sampling, prediction=d.prediction, prior_logit_shift=prior_logit_shift(cfg, class_counts),
                freeze_prior=cfg.train.freeze_prior, prior_mean=m.prior_mean,
                chain_logit_shift=None if chain_tau is None else adjustment_shift(class_counts, chain_tau))


def prior_logit_shift(cfg: Config, class_counts: list[int]) -> torch.Tensor:
    """What the prior's CE adds to its logits: 0 (``ce``), or log n_j (``balanced_softmax``, Ren et al.
    2020; at test time the raw logits give the class-balanced posterior)."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64).clamp_min(1.0)
    return counts.log().float() if cfg.model.prior_loss == "balanced_softmax" else torch.zeros(len(counts))
