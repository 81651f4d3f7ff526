"""Post-hoc logit adjustment (Menon et al., ICLR 2021, eq. 9): ``method=posthoc_la`` on any trained
classifier, and ``model.prior_readout=posthoc_la`` for ADPM's prior (docs/baselines.md).

posthoc_la trains exactly as the classifier method ``baseline.posthoc_base`` (default ``ce``: the
paper's setting) and predicts argmax_j f_j(x) - tau log pi_j, tau chosen on validation data
(readout.py). For ADPM, only the prior's prediction block changes: softmax(fused - tau log pi)
instead of softmax(fused). The diffusion's y0 still starts from the raw prior mean it was trained
with, so the ADPM scores are the same either way; what moves is the "prior" block of the metrics
(and predictions.csv's prior columns).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from . import losses
from .adpm import ADPMMethod
from .classifiers import ClassifierMethod, ClassifierModel
from .readout import ChosenTau, ValidationTau, add_readout_buffer


class PosthocModel(ChosenTau, ClassifierModel):
    """A classifier predicting score_scale * f(x) - tau log pi (tau: ``readout_tau``)."""

    def choose_tau(self, device) -> float:
        return self.validation.choose(self, self.scores, self.adjusted, device)

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        return self.score_scale * self.outputs(images)

    def adjusted(self, scores: torch.Tensor, tau: float) -> torch.Tensor:
        return losses.posthoc_adjusted_logits(scores, self.class_counts, tau=tau)

    @torch.no_grad()
    def sample(self, images: torch.Tensor, **_ignored) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.adjusted(self.scores(images), self.current_tau(images.device))
        return scores, F.softmax(scores, dim=1)


class PosthocLogitAdjustment(ClassifierMethod):
    """Trains as ``baseline.posthoc_base`` (its loss, head, stream, epochs); adjusts only the read-out."""

    name, title = "posthoc_la", "post-hoc logit adjustment"

    def __init__(self, cfg):
        super().__init__(cfg)
        from . import method_class  # the registry imports this module

        self.base: ClassifierMethod = method_class(cfg.baseline.posthoc_base)(cfg)
        self.cosine_head = self.base.cosine_head
        self.validation = ValidationTau(cfg, "posthoc_la")

    def training_twin(self) -> dict:
        return {"method": self.cfg.baseline.posthoc_base}  # the read-out alone differs

    def epochs(self):
        return self.base.epochs()

    def class_balanced(self, epoch: int) -> bool:
        return self.base.class_balanced(epoch)

    def loss(self, logits, labels, counts, epoch):
        return self.base.loss(logits, labels, counts, epoch)

    def make_model(self, class_counts: list[int]) -> PosthocModel:
        model = PosthocModel(self.network(len(class_counts)), class_counts, self.loss, loss_name=self.name,
                             score_scale=self.base.score_scale())
        model.validation = self.validation
        return add_readout_buffer(model)

    def prediction_levels(self, model: nn.Module, batches: Iterable[dict], device: torch.device,
                          reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """tau for these weights, on the validation data (never ``batches``: they may be the evaluation part)."""
        model.choose_tau(device)
        return None

    def choices(self) -> dict[str, dict]:
        return self.validation.choices()


class ADPMWithPriorReadout(ADPMMethod):
    """ADPM (adpm.py) plus ``model.prior_readout``: with posthoc_la its prior block is logit-adjusted."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.validation = ValidationTau(cfg, "prior read-out posthoc_la")

    def adjusts(self) -> bool:
        return self.cfg.model.prior_readout == "posthoc_la"

    def training_twin(self) -> dict | None:
        # the raw read-out trains the same weights; the readout_counts buffer is rebuilt from the same data
        return {"model.prior_readout": "raw"} if self.adjusts() else None

    def make_model(self, class_counts: list[int]) -> nn.Module:
        model = super().make_model(class_counts)
        if self.adjusts():  # n_j saved with the weights (a checkpoint's model is rebuilt with dummy counts);
            # only then, so that raw-readout checkpoints keep exactly ADPM's keys
            model.register_buffer("readout_counts", torch.as_tensor(class_counts, dtype=torch.float32))
            add_readout_buffer(model)
        return model

    def choose_tau(self, model: nn.Module, device) -> float:
        return self.validation.choose(model, lambda images: model.prior(images).fused.float(),
                                      lambda z, tau: losses.posthoc_adjusted_logits(z, model.readout_counts, tau=tau),
                                      device)

    def choices(self) -> dict[str, dict]:
        return self.validation.choices() if self.adjusts() else {}

    def prediction_levels(self, model, batches, device, reduce_sum):
        if self.adjusts():
            self.choose_tau(model, device)
        return super().prediction_levels(model, batches, device, reduce_sum)

    @torch.no_grad()
    def predictions(self, model, images, *, generator, levels=None):
        scores, prior = super().predictions(model, images, generator=generator, levels=levels)
        if self.adjusts():
            tau = float(model.readout_tau)
            if math.isnan(tau):  # predicted without prediction_levels first
                tau = self.choose_tau(model, images.device)
            # the chain's prior block is softmax(fused): log of it is fused up to a per-row constant, which
            # softmax ignores, so no second prior pass is needed (tiny clamps an underflowed 0, never the argmax)
            log_prior = torch.log(prior.float().clamp_min(torch.finfo(torch.float32).tiny))
            prior = F.softmax(losses.posthoc_adjusted_logits(log_prior, model.readout_counts, tau=tau), dim=1)
        return scores, prior
