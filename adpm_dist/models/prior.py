"""The prior network f_phi (DiffMIC's DCG, ADPM_SPEC 2.2): global and local image priors.

Its softmax outputs are the means the label diffuses toward (eq. 16): the fused prior for the main
chain, the global and local priors for the two auxiliary chains of the forward prior.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .backbone import FeatureMap


@dataclass
class PriorOutput:
    """Logits of each branch; ``fused`` is what the CE loss trains and the main chain diffuses toward."""
    fused: torch.Tensor
    global_: torch.Tensor
    local: torch.Tensor
    saliency: torch.Tensor  # (B, K, h, w) class activation map of the global branch


class PriorNetwork(nn.Module):
    """Global branch: backbone map -> 1x1 conv -> class activation map -> mean = logits (ADPM_SPEC 2.2).

    The local branch (top-k saliency crops through a second backbone with gated attention) arrives
    with the full DCG; until then the local prior equals the global one.
    """

    def __init__(self, num_classes: int, backbone: str, level: int = -1, pretrained: str = ""):
        super().__init__()
        self.features = FeatureMap(backbone, level, pretrained)
        self.cam = nn.Conv2d(self.features.channels, num_classes, kernel_size=1, bias=False)

    def forward(self, images: torch.Tensor) -> PriorOutput:
        saliency = self.cam(self.features(images))
        global_ = saliency.mean(dim=(2, 3))  # TopTPercentAggregation with t = 100% is plain GAP
        return PriorOutput(fused=global_, global_=global_, local=global_, saliency=saliency)
