"""The prior network f_phi (DiffMIC's DCG, docs/algorithm.md, "Prior network (DCG)"): global and local image priors.

Its softmax outputs are the means the label diffuses toward (eq. 16): the fused prior for the main
chain, the global and local priors for the two auxiliary chains of the forward prior.

  global: backbone map -> 1x1 conv -> class activation map S (B, K, h, w) -> mean = logits
  ROI:    per class min-max normalise S, sum over classes -> saliency A; greedily take the top
          ``num_crops`` windows of A (zeroing each chosen window) -> crops of ``crop_size`` pixels
  local:  second backbone on the crops -> mean over space -> gated-attention MIL -> logits
  fused = 0.5 (global + local)   (logits; the CE loss trains this output only, as in DiffMIC)

DiffMIC runs the crop selection as a per-sample Python loop on cuda:0; here it is vectorised over
the batch (the only loop is over the few crops) and lives on whatever device the images are on.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import FeatureMap

CROP_CHANNELS = ("channel0", "rgb")


@dataclass
class PriorOutput:
    """Logits of each branch; ``fused`` is what the CE loss trains and the main chain diffuses toward."""
    fused: torch.Tensor
    global_: torch.Tensor
    local: torch.Tensor
    saliency: torch.Tensor             # (B, K, h, w) class activation map of the global branch
    corners: torch.Tensor | None = None    # (B, num_crops, 2) upper-left pixel (row, col) of each crop
    attention: torch.Tensor | None = None  # (B, num_crops) MIL attention over the crops
    features: torch.Tensor | None = None   # (B, C, h, w) global backbone map (the denoiser may share it)


def saliency_map(cam: torch.Tensor) -> torch.Tensor:
    """A = sum_k minmax_hw(S_k): each class map scaled to [0, 1] over space, then summed (B, h, w)."""
    flat = cam.flatten(2)
    lo, hi = flat.min(dim=2, keepdim=True).values, flat.max(dim=2, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).sum(dim=1).view(cam.shape[0], *cam.shape[2:])


def select_windows(saliency: torch.Tensor, num_crops: int, window: int) -> torch.Tensor:
    """Greedy top-``num_crops`` windows of ``window`` x ``window`` cells; (B, num_crops, 2) cell corners.

    Each round takes the window with the largest mean saliency and zeroes its cells (GMIC/DiffMIC's
    retrieve_roi). With one-cell windows (DiffMIC's 32 px crops of a 7x7 map) this is the top-k cells.
    Vectorised over the batch; the loop runs over the crops only.
    """
    a = saliency.detach().clone().unsqueeze(1)                         # (B, 1, h, w)
    b, _, h, w = a.shape
    window = min(window, h, w)
    rows = torch.arange(h, device=a.device).view(1, h, 1)
    cols = torch.arange(w, device=a.device).view(1, 1, w)
    corners = []
    for _ in range(num_crops):
        scores = F.avg_pool2d(a, window, stride=1).flatten(1)          # (B, positions)
        best = scores.argmax(dim=1)
        r, c = best // (w - window + 1), best % (w - window + 1)
        corners.append(torch.stack([r, c], dim=1))
        inside = ((rows >= r.view(b, 1, 1)) & (rows < r.view(b, 1, 1) + window)
                  & (cols >= c.view(b, 1, 1)) & (cols < c.view(b, 1, 1) + window))
        a = a.masked_fill(inside.unsqueeze(1), 0.0)
    return torch.stack(corners, dim=1)


def extract_crops(images: torch.Tensor, corners: torch.Tensor, size: int, channels: str = "channel0") -> torch.Tensor:
    """Gather (B * n, 3, size, size) crops at pixel corners (B, n, 2) with one indexing op.

    channel0: DiffMIC's quirk, channel 0 of the normalised image repeated to 3 channels;
    rgb: the three channels.
    """
    if channels not in CROP_CHANNELS:
        raise ValueError(f"model.crop_channels: {channels!r} is not one of {', '.join(CROP_CHANNELS)}")
    b, n = corners.shape[:2]
    offsets = torch.arange(size, device=images.device)
    rows = (corners[..., 0:1] + offsets).view(b, n, size, 1)           # (B, n, size, 1)
    cols = (corners[..., 1:2] + offsets).view(b, n, 1, size)           # (B, n, 1, size)
    batch = torch.arange(b, device=images.device).view(b, 1, 1, 1)
    source = images[:, :1] if channels == "channel0" else images
    crops = source.permute(0, 2, 3, 1)[batch, rows, cols]              # (B, n, size, size, C)
    crops = crops.permute(0, 1, 4, 2, 3).reshape(b * n, -1, size, size)
    return crops.expand(-1, 3, -1, -1) if channels == "channel0" else crops


class GatedAttentionMIL(nn.Module):
    """Ilse et al.'s gated attention: a_k = w^T(sigmoid(U h_k) * tanh(V h_k)), z = sum softmax(a)_k h_k."""

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.u = nn.Linear(dim, hidden, bias=False)
        self.v = nn.Linear(dim, hidden, bias=False)
        self.w = nn.Linear(hidden, 1, bias=False)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h: (B, n, dim) instance features -> bag feature (B, dim) and attention (B, n)."""
        attn = self.w(torch.sigmoid(self.u(h)) * torch.tanh(self.v(h))).squeeze(-1).softmax(dim=1)
        return (attn.unsqueeze(-1) * h).sum(dim=1), attn


class PriorNetwork(nn.Module):
    """DiffMIC's DCG (docs/algorithm.md, "Prior network (DCG)"): global CAM branch + local crop branch with MIL pooling."""

    def __init__(self, num_classes: int, backbone: str, level: int = -1, pretrained: str = "", *,
                 local_backbone: str = "", local_level: int = -1, local_pretrained: str = "",
                 crop_size: int = 32, num_crops: int = 6, crop_channels: str = "channel0", mil_dim: int = 128):
        super().__init__()
        if crop_channels not in CROP_CHANNELS:
            raise ValueError(f"model.crop_channels: {crop_channels!r} is not one of {', '.join(CROP_CHANNELS)}")
        if crop_size < 1 or num_crops < 1:
            raise ValueError(f"model.crop_size ({crop_size}) and model.num_crops ({num_crops}) must be >= 1")
        self.features = FeatureMap(backbone, level, pretrained)
        self.cam = nn.Conv2d(self.features.channels, num_classes, kernel_size=1, bias=False)
        self.local_features = FeatureMap(local_backbone or backbone, local_level, local_pretrained)
        self.mil = GatedAttentionMIL(self.local_features.channels, mil_dim)
        self.local_head = nn.Linear(self.local_features.channels, num_classes, bias=False)
        self.crop_size, self.num_crops, self.crop_channels = crop_size, num_crops, crop_channels

    def forward(self, images: torch.Tensor) -> PriorOutput:
        height, width = images.shape[-2:]
        if self.crop_size > min(height, width):
            raise ValueError(f"model.crop_size {self.crop_size} exceeds the {height}x{width} images")
        fmap = self.features(images)
        cam = self.cam(fmap)
        global_ = cam.mean(dim=(2, 3))  # TopTPercentAggregation with t = 100% is plain GAP
        # ROI retrieval: the crop covers round(crop / cell) map cells (DiffMIC: round(32 * 7 / 224) = 1);
        # a map cell (r, c) starts at pixel (r, c) * cell, moved inside the image if the crop overhangs.
        cell_h, cell_w = height / cam.shape[-2], width / cam.shape[-1]
        window = max(1, round(self.crop_size / cell_h))
        cell = torch.tensor([cell_h, cell_w], device=images.device)
        with torch.no_grad():
            cells = select_windows(saliency_map(cam.float()), self.num_crops, window)
            limit = torch.tensor([height - self.crop_size, width - self.crop_size], device=images.device)
            corners = torch.minimum((cells.float() * cell).round().long(), limit)
        crops = extract_crops(images, corners, self.crop_size, self.crop_channels)
        h = self.local_features(crops).mean(dim=(2, 3)).view(images.shape[0], self.num_crops, -1)
        bag, attention = self.mil(h)
        local = self.local_head(bag)
        return PriorOutput(fused=0.5 * (global_ + local), global_=global_, local=local, saliency=cam,
                           corners=corners, attention=attention, features=fmap)
