"""``method=adpm``: the anisotropic diffusion classifier (docs/algorithm.md) and its ablations;
``method=adpm_adjusted_chain``: ADPM whose chains diffuse toward the logit-adjusted prior.

ADPM's variants (isotropic diffusion, the paper's Table 3 ablations, a balanced-softmax or frozen
prior) are settings of this one method (``noise.alpha=0``, ``model.reverse_prior=false`` ...). The
adjusted chain is a method of its own so that a study lists it beside ADPM with its own search
space (``model.chain_tau``): docs/algorithm.md, "Adjusted chain (eq. 5 and 16 with the adjusted prior)".
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..config import Config
from ..diffusion.scheduler import antithetic_timesteps
from ..models.adpm import ADPM, build_model
from .base import EpochPlan, Method, SharedPrefix, defaults_of


class ADPMMethod(Method):
    name = "adpm"
    title = "ADPM (diffusion)"
    plateau_loss = "diffusion"  # the denoiser's eq. 17 loss: the paper trains "until it has converged"
    has_diffusion = True
    counts_buffer = "levels"
    # The noise law (eq. 14) from the paper's grid (Table 2: alpha 0 .. 1, beta 1 .. 10; best 1/6, 5);
    # alpha = 0 (isotropic, beta ignored) is the study's own entry, not a point of this space.
    search_space = {"noise.alpha": [1 / 6, 1 / 2, 1.0], "noise.beta": [1.0, 5.0]}

    @classmethod
    def check(cls, cfg: Config) -> list[tuple[str, str]]:
        t = cfg.train
        if t.freeze_prior and not (t.prior_warmup_epochs or cfg.model.pretrained):
            return [("train.freeze_prior", "freezing the prior after its warm-up needs a trained prior: "
                     f"train.prior_warmup_epochs > 0 (got {t.prior_warmup_epochs}) or model.pretrained")]
        return []

    def epochs(self) -> EpochPlan:
        t = self.cfg.train
        return EpochPlan(t.prior_warmup_epochs, t.prior_warmup_epochs + t.epochs)

    # What the prior warm-up never reads: the noise law acts on the chains (joint epochs, sampling) and sets only
    # the ``levels`` buffer at build; the adjusted chain's tau likewise (its buffer ``chain_logit_shift``), so
    # ADPM and its adjusted chain (``method``) share the warm-up too: same prior, same denoiser draws
    after_warmup_keys = ("method", "model.chain_tau", "noise.alpha", "noise.beta", "noise.formula", "noise.n_floor",
                         "noise.test_rule", "noise.apply", "noise.test_levels")
    built_buffers = ("levels", "chain_logit_shift")

    def shared_prefix(self) -> SharedPrefix | None:
        """The prior warm-up (train.prior_warmup_epochs): only the prior trains, on its own CE; the denoiser
        is built (same RNG draws) but never stepped, and the generator draws t and eps as in every step."""
        warmup = self.cfg.train.prior_warmup_epochs
        if warmup == 0:
            return None
        return SharedPrefix(warmup, defaults_of(self.after_warmup_keys), own_state=self.built_buffers)

    def phase(self, epoch: int) -> str:
        return "joint" if self.epochs().is_joint(epoch) else "prior warm-up"

    def make_model(self, class_counts: list[int]) -> ADPM:
        return build_model(self.cfg, class_counts)

    def joint_starts(self, epoch: int) -> bool:
        return epoch == self.epochs().warmup

    def losses(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epoch: int,
               generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Eq. 17 and the prior's CE; t (antithetic) and eps drawn from the run's own generator."""
        d, device = self.cfg.diffusion, images.device
        t = antithetic_timesteps(len(labels), d.train_t_max or d.timesteps, generator, device)
        eps = torch.randn(len(labels), self.num_classes, generator=generator).to(device)
        return model(images, labels, t, eps, joint=self.epochs().is_joint(epoch))

    def example_inputs(self, image_size: int, num_classes: int) -> tuple[tuple, dict]:
        (images, labels), _ = super().example_inputs(image_size, num_classes)
        return (images, labels, torch.zeros(2, dtype=torch.long), torch.zeros(2, num_classes)), {"joint": True}

    @torch.no_grad()
    def predictions(self, model: nn.Module, images: torch.Tensor, *, generator: torch.Generator,
                    levels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return model.sample(images, generator=generator, levels=levels)

    def prediction_levels(self, model: nn.Module, batches: Iterable[dict], device: torch.device,
                          reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor | None:
        if self.cfg.noise.test_levels == "soft_counts":  # pass 1 of 2 over the evaluated images
            return model.soft_count_levels(batches, device, reduce_sum)
        return None


class ADPMAdjustedChain(ADPMMethod):
    """ADPM with every chain's mean softmax(z - tau log pi) (tau = ``model.chain_tau``, pi the training
    class frequencies) in training (eq. 5, 16) and sampling alike; the prior still trains with its own
    loss and eq. 18 still reads its unadjusted posterior."""

    name = "adpm_adjusted_chain"
    title = "ADPM, chain toward the logit-adjusted prior"
    # tau around Menon et al.'s 1 (the balanced error's Bayes rule), with and without anisotropic noise
    search_space = {"model.chain_tau": [0.5, 1.0, 1.5], "noise.alpha": [0.0, 1 / 6]}

    @classmethod
    def check(cls, cfg: Config) -> list[tuple[str, str]]:
        problems = super().check(cfg)
        if cfg.model.prior_readout != "raw":  # the prior block is already the adjusted chain mean
            problems.append(("model.prior_readout", f"{cfg.model.prior_readout!r} would adjust the prior block a "
                             "second time: method=adpm_adjusted_chain reads out the adjusted prior itself (use raw)"))
        return problems

    def make_model(self, class_counts: list[int]) -> ADPM:
        return build_model(self.cfg, class_counts, chain_tau=self.cfg.model.chain_tau)
