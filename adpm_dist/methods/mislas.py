"""MiSLAS (Zhong et al., CVPR 2021, "Improving calibration for long-tailed recognition"): ``method=mislas``
(docs/baselines.md).

Stage 1: CE with mixup (lambda ~ Beta(alpha, alpha), partner = a permutation of the batch; both drawn
from the run's own generator, so a resumed run mixes the same pairs). Stage 2: the classifier (a copy
of the stage-1 head) re-trained with label-aware smoothing (losses.label_aware_smoothing_loss) on a
class-balanced stream, the backbone fixed but its BatchNorm in train mode: the running statistics
are re-estimated on the stage-2 data ("shifted BN"; its affine parameters stay fixed).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import losses
from .classifiers import PooledClassifier
from .staged import CopiedHead, TwoStageMethod


def mixup_draw(batch: int, alpha: float, generator: torch.Generator) -> tuple[float, torch.Tensor]:
    """(lambda ~ Beta(alpha, alpha), a permutation of the batch) from ``generator`` alone. alpha = 0: no mixing."""
    perm = torch.randperm(batch, generator=generator)
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha)) if alpha > 0 else 1.0
    return lam, perm


class MiSLAS(TwoStageMethod):
    name, title = "mislas", "MiSLAS (mixup, label-aware smoothing, shifted BN)"
    shifted_bn = True
    stage2_keys = ("baseline.mislas_smooth_head", "baseline.mislas_smooth_tail", "baseline.mislas_shape")
    # Zhong et al. 2021, eps_1 / eps_K: 0.3 / 0.0 (CIFAR-10-LT, ImageNet-LT), 0.4 / 0.1 (CIFAR-100-LT)
    search_space = {"baseline.mislas_smooth_head": [0.2, 0.3, 0.4], "baseline.mislas_smooth_tail": [0.0, 0.1]}

    def losses(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epoch: int,
               generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self.in_stage2(epoch):
            return model(images, labels)
        lam, perm = mixup_draw(len(labels), self.cfg.baseline.mislas_mixup_alpha, generator)
        perm = perm.to(images.device)
        mixed = lam * images + (1.0 - lam) * images[perm]
        return model(mixed, labels, partner=labels[perm], lam=torch.tensor(lam, device=images.device))

    def loss(self, logits, labels, counts, epoch, *, partner: torch.Tensor, lam: torch.Tensor):
        return losses.mixup_cross_entropy(logits, labels, partner, lam=float(lam))

    def stage2_loss(self, logits, labels, counts, epoch):
        b = self.cfg.baseline
        return losses.label_aware_smoothing_loss(logits, labels, counts, head=b.mislas_smooth_head,
                                                 tail=b.mislas_smooth_tail, shape=b.mislas_shape)

    def stage2_module(self, network: PooledClassifier) -> nn.Module:
        return CopiedHead(network.head)
