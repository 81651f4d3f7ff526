"""Decoupled training (Kang et al., ICLR 2020): ``method=crt``, ``lws``, ``tau_norm`` (docs/baselines.md).

All three learn the representation with plain instance-balanced CE (stage 1, the ``ce`` baseline's
recipe) and then re-balance only the classifier:

- crt: classifier re-training. Stage 2 trains a freshly initialised linear head on the fixed
  backbone with class-balanced sampling (staged.py explains the two-stage mechanics).
- lws: learnable weight scaling. Stage 2 learns one scale f_j per class on the fixed stage-1 head,
  class-balanced sampling.
- tau_norm: no stage 2, and no training of its own: it trains exactly the ``ce`` baseline (the same
  network, linear head with its bias, loss and stream), so a study trains it once, as ``ce``, and
  replays this read-out over ce's weights (``training_twin``; docs/tune.md, "Shared training"). The
  head is read out as w_j / ||w_j||^tau + b_j (losses.tau_normalised_weight), tau chosen on validation
  data (readout.py). The bias is kept as trained, not normalised, so that tau = 0 is exactly the
  trained CE classifier (Kang et al.'s own read-out drops the bias of their CE head; keeping it lets a
  validation that finds no gain in normalising keep the classifier as trained).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from . import losses
from .classifiers import ClassifierMethod, ClassifierModel, PooledClassifier
from .readout import ChosenTau, ValidationTau, add_readout_buffer
from .staged import ClassScales, NewHead, TwoStageMethod


class ClassifierRetraining(TwoStageMethod):
    name, title = "crt", "decoupled: classifier re-training (cRT)"
    stage1_of = "ce"

    def stage2_module(self, network: PooledClassifier) -> nn.Module:
        return NewHead(network.head)


class LearnableWeightScaling(TwoStageMethod):
    name, title = "lws", "decoupled: learnable weight scaling (LWS)"
    stage1_of = "ce"

    def stage2_module(self, network: PooledClassifier) -> nn.Module:
        return ClassScales(network.head.out_features)


class TauNormModel(ChosenTau, ClassifierModel):
    """A CE classifier whose prediction reads the head as w_j / ||w_j||^tau (tau: ``readout_tau``)."""

    def choose_tau(self, device) -> float:
        return self.validation.choose(self, self.pooled, self.normalised_scores, device)

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images).mean(dim=(2, 3)).float()

    def normalised_scores(self, pooled: torch.Tensor, tau: float) -> torch.Tensor:
        head = self.classifier.head
        return pooled @ losses.tau_normalised_weight(head.weight.float(), tau=tau).t() + head.bias.float()

    @torch.no_grad()
    def sample(self, images: torch.Tensor, **_ignored) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.normalised_scores(self.pooled(images), self.current_tau(images.device))
        return scores, F.softmax(scores, dim=1)


class TauNormalised(ClassifierMethod):
    name, title = "tau_norm", "decoupled: tau-normalised classifier"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.validation = ValidationTau(cfg, "tau_norm")

    def training_twin(self) -> dict:
        return {"method": "ce"}  # ce's network, loss and stream: only the read-out differs

    def make_model(self, class_counts: list[int]) -> TauNormModel:
        model = add_readout_buffer(TauNormModel(self.network(len(class_counts)), class_counts, self.loss,
                                                loss_name=self.name))
        model.validation = self.validation
        return model

    def prediction_levels(self, model: nn.Module, batches: Iterable[dict], device: torch.device,
                          reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """tau for these weights, on the validation data (never ``batches``: they may be the evaluation part)."""
        model.choose_tau(device)
        return None

    def choices(self) -> dict[str, dict]:
        return self.validation.choices()


DECOUPLED = (ClassifierRetraining, LearnableWeightScaling, TauNormalised)
