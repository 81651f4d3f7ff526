"""Logit-adjusting losses: ``method=vs`` (Kini et al., NeurIPS 2021) and ``method=gcl`` (Li et al.,
CVPR 2022); docs/baselines.md.

- vs: one stage, the VS loss (losses.vs_loss) on a linear head; prediction with the raw logits.
- gcl: stage 1 trains a cosine classifier with Gaussian clouded logits (losses.gcl_loss; the cloud
  e ~ N(0, 1) is drawn from the run's own generator, so a resumed run draws the same clouds);
  stage 2 re-trains the classifier (a copy of the stage-1 cosine head) with CE on the scaled cosines
  on a class-balanced stream, the backbone fixed (staged.py). Scores: gcl_scale * cosine.
"""
from __future__ import annotations

import torch
from torch import nn

from . import losses
from .classifiers import ClassifierMethod, PooledClassifier
from .staged import CopiedHead, TwoStageMethod


class VectorScaling(ClassifierMethod):
    name, title = "vs", "VS loss"
    # Kini et al. 2021 grid-search gamma and tau per dataset; around their CIFAR-LT choices
    search_space = {"baseline.vs_gamma": [0.1, 0.2, 0.3], "baseline.vs_tau": [1.0, 1.5]}

    def loss(self, logits, labels, counts, epoch):
        b = self.cfg.baseline
        return losses.vs_loss(logits, labels, counts, gamma=b.vs_gamma, tau=b.vs_tau)


class GaussianCloudedLogits(TwoStageMethod):
    name, title = "gcl", "GCL (Gaussian clouded logits) + classifier re-training"
    cosine_head = True
    search_space = {"baseline.gcl_noise_mul": [0.25, 0.5, 1.0]}  # Li et al. 2022: 0.5 in their CIFAR setting

    def score_scale(self) -> float:
        return self.cfg.baseline.gcl_scale

    def losses(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epoch: int,
               generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self.in_stage2(epoch):
            return model(images, labels)
        k = getattr(model, "module", model).num_classes  # the wrapped model (DDP / DeepSpeed) or the model
        eps = torch.randn(len(labels), k, generator=generator).to(images.device)
        return model(images, labels, eps=eps)

    def loss(self, logits, labels, counts, epoch, *, eps: torch.Tensor):
        b = self.cfg.baseline
        return losses.gcl_loss(logits, labels, counts, noise_mul=b.gcl_noise_mul, scale=b.gcl_scale,
                               margin=b.gcl_margin, eps=eps)

    def stage2_loss(self, logits, labels, counts, epoch):
        return nn.functional.cross_entropy(self.cfg.baseline.gcl_scale * logits, labels)

    def stage2_module(self, network: PooledClassifier) -> nn.Module:
        return CopiedHead(network.head)


MARGINS = (VectorScaling, GaussianCloudedLogits)
