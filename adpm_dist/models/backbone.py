"""timm backbones as feature-map extractors; weights only from a local file (nothing is downloaded)."""
from __future__ import annotations

import pickle
from pathlib import Path

import timm
import torch
from torch import nn


class FeatureMap(nn.Module):
    """A timm model cut at one stage (``level``: index into its feature_info, -1 = deepest).

    Small images (digits-LT at 32 px) want a shallower level so that the map keeps several cells
    for the CAM and the cross-attention tokens.
    """

    def __init__(self, name: str, level: int = -1, pretrained: str = ""):
        super().__init__()
        try:
            probe = timm.create_model(name, pretrained=False, features_only=True)
        except RuntimeError as e:  # timm raises RuntimeError("Unknown model ...")
            raise ValueError(f"model backbone {name!r} is not a timm model: {e}") from None
        n_levels = len(probe.feature_info)
        if not -n_levels <= level < n_levels:
            raise ValueError(f"feature level {level} out of range for {name!r} ({n_levels} levels)")
        index = level % n_levels
        kwargs = {}
        if pretrained:
            path = Path(pretrained)
            if not path.is_file():
                raise FileNotFoundError(f"pretrained checkpoint not found: {path} (nothing can be downloaded)")
            kwargs = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path)}}
        try:
            self.net = timm.create_model(name, features_only=True, out_indices=(index,), **kwargs)
        except (RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as e:
            if not pretrained:
                raise
            raise ValueError(f"pretrained checkpoint {pretrained} does not fit timm model {name!r} "
                             f"(not a state dict of that architecture): {e}") from None
        self.channels = self.net.feature_info.channels()[0]
        self.reduction = self.net.feature_info.reduction()[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]
