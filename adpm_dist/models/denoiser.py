"""The denoiser eps_theta (ADPM_SPEC 2.3 and 3.4): time-gated MLP on (y_t, mu) conditioned on the image.

Image features do not depend on (y_t, t), so ``encode`` runs once per image and its output is
reused at every diffusion step and by all three prior chains (ADPM_SPEC 3.7 step 4, 3.8).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import FeatureMap


@dataclass
class ImageFeatures:
    tokens: torch.Tensor | None   # (B, N, token_dim) spatial tokens for the cross-attention (reverse prior)
    pooled: torch.Tensor | None   # (B, hidden_dim) DiffMIC's projected global feature for the product

    def repeat(self, n: int) -> "ImageFeatures":
        """The same features for n stacked chains or samples (batch dimension tiled n times)."""
        return ImageFeatures(None if self.tokens is None else self.tokens.repeat(n, 1, 1),
                             None if self.pooled is None else self.pooled.repeat(n, 1))


class ConditionalLinear(nn.Module):
    """Linear layer gated by a learned per-time-step vector (CARD/DiffMIC): out = W h * e[t]."""

    def __init__(self, d_in: int, d_out: int, timesteps: int):
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)
        self.embed = nn.Embedding(timesteps + 1, d_out)  # row T unused (ADPM_SPEC 4.12)
        nn.init.uniform_(self.embed.weight)               # uniform [0, 1) as in CARD

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.lin(h) * self.embed(t)


class CrossAttention(nn.Module):
    """Pre-norm cross-attention + FFN block: label tokens query image tokens (ADPM_SPEC 3.4)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(kv)
        q = q + self.attn(self.norm_q(q), kv, kv, need_weights=False)[0]
        return q + self.ff(self.norm_ff(q))


class ImageEncoder(nn.Module):
    """Backbone map -> spatial tokens (+ learned positions) and a pooled feature (ADPM_SPEC 2.3, 3.4).

    Only the outputs the denoiser uses are built (``tokens`` for the reverse prior, ``pooled`` for
    DiffMIC's product): a parameter that never gets a gradient would trip DDP's unused-parameter check.
    """

    def __init__(self, backbone: str, image_size: int, token_dim: int, hidden_dim: int, level: int = -1,
                 pretrained: str = "", *, tokens: bool = True, pooled: bool = True):
        super().__init__()
        self.features = FeatureMap(backbone, level, pretrained)
        side = max(1, -(-image_size // self.features.reduction))
        self.to_tokens = self.pos = self.to_pooled = None
        if tokens:
            self.to_tokens = nn.Linear(self.features.channels, token_dim)
            self.pos = nn.Parameter(torch.zeros(1, side * side, token_dim))
            nn.init.normal_(self.pos, std=0.02)
        if pooled:
            self.to_pooled = nn.Sequential(nn.Linear(self.features.channels, hidden_dim), nn.BatchNorm1d(hidden_dim))

    def forward(self, images: torch.Tensor) -> ImageFeatures:
        fmap = self.features(images)                   # (B, C, h, w)
        cells = fmap.flatten(2).transpose(1, 2)        # (B, h*w, C)
        tokens = pooled = None
        if self.to_tokens is not None:
            if cells.shape[1] != self.pos.shape[1]:
                raise ValueError(f"image gives {cells.shape[1]} tokens, encoder built for {self.pos.shape[1]}: "
                                 "data.image_size differs from the size the model was built with")
            tokens = self.to_tokens(cells) + self.pos
        if self.to_pooled is not None:
            pooled = self.to_pooled(cells.mean(dim=1))
        return ImageFeatures(tokens, pooled)


class Denoiser(nn.Module):
    """eps_theta(x, y_t, mu, t): DiffMIC's ConditionalModel with a cross-attention reverse prior.

    h = softplus(BN(CondLin(cat(y_t, mu))))           2K -> hidden  (ADPM's 6144-wide layer)
    h = CrossAttn(h as hidden/token_dim tokens, image tokens)       (reverse prior, eq. 15-16)
    h = h * pooled image feature                                    (DiffMIC's product, optional)
    h = softplus(BN(CondLin(h))) twice; eps = Linear(h)             hidden -> K
    """

    def __init__(self, num_classes: int, *, encoder: ImageEncoder | None, hidden_dim: int, token_dim: int,
                 heads: int, timesteps: int, reverse_prior: bool = True, feature_product: bool = True):
        super().__init__()
        if (reverse_prior or feature_product) and encoder is None:
            raise ValueError("the denoiser is conditioned on the image (reverse prior or product) but has no encoder")
        self.encoder = encoder  # None: no image conditioning at all (reverse_prior and feature_product off)
        self.token_dim = token_dim
        self.reverse_prior, self.feature_product = reverse_prior, feature_product
        self.lin1 = ConditionalLinear(2 * num_classes, hidden_dim, timesteps)
        self.lin2 = ConditionalLinear(hidden_dim, hidden_dim, timesteps)
        self.lin3 = ConditionalLinear(hidden_dim, hidden_dim, timesteps)
        self.norms = nn.ModuleList(nn.BatchNorm1d(hidden_dim) for _ in range(3))
        self.xattn = CrossAttention(token_dim, heads) if reverse_prior else None
        self.out = nn.Linear(hidden_dim, num_classes)

    def encode(self, images: torch.Tensor) -> ImageFeatures:
        """Image features for ``forward``; they do not depend on (y_t, t), so callers compute them once."""
        return ImageFeatures(None, None) if self.encoder is None else self.encoder(images)

    def forward(self, feats: ImageFeatures, y_t: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = F.softplus(self.norms[0](self.lin1(torch.cat([y_t, mu], dim=1), t)))
        if self.xattn is not None:
            q = h.view(h.shape[0], -1, self.token_dim)
            h = self.xattn(q, feats.tokens).flatten(1)
        if self.feature_product:
            h = h * feats.pooled
        h = F.softplus(self.norms[1](self.lin2(h, t)))
        h = F.softplus(self.norms[2](self.lin3(h, t)))
        return self.out(h)
