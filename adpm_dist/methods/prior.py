"""``method=prior``: ADPM's own prior network (DiffMIC's DCG) alone, trained as inside ADPM.

Cross-entropy on its fused logits, Adam (amsgrad) at the constant train.prior_lr without clipping,
for as many epochs as the prior trains inside ADPM (warm-up + joint), every epoch validated: the
"prior" baseline of the paper's Table 3.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.adpm import build_prior
from .base import EpochPlan
from .classifiers import ClassifierMethod, ClassifierModel


class PriorAlone(ClassifierMethod):
    name, title = "prior", "prior network alone (DCG)"

    def epochs(self) -> EpochPlan:
        t = self.cfg.train
        return EpochPlan(0, t.prior_warmup_epochs + t.epochs)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor, epoch: int) -> torch.Tensor:
        return F.cross_entropy(logits, labels)

    def make_model(self, class_counts: list[int]) -> ClassifierModel:
        network = build_prior(self.cfg, len(class_counts))
        return ClassifierModel(network, class_counts, self.loss, loss_name="prior_ce", prior=True)
