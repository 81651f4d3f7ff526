"""The denoiser eps_theta (docs/algorithm.md, "Denoiser"): time-gated MLP on (y_t, mu) conditioned on the image.

Image features do not depend on (y_t, t), so ``encode`` runs once per image and its output is
reused at every diffusion step and by all three prior chains (docs/algorithm.md, "Training loop", "Sampling").
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
    keys: torch.Tensor | None = None    # (B, heads, N, token_dim / heads) the attention's keys and values
    values: torch.Tensor | None = None  # of the tokens: they depend on the image only, so computed once too

    def repeat(self, n: int) -> "ImageFeatures":
        """The same features for n stacked chains or samples (batch dimension tiled n times)."""
        def tile(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.repeat(n, *([1] * (x.dim() - 1)))

        return ImageFeatures(tile(self.tokens), tile(self.pooled), tile(self.keys), tile(self.values))


class ConditionalLinear(nn.Module):
    """Linear layer gated by a learned per-time-step vector (CARD/DiffMIC): out = W h * e[t]."""

    def __init__(self, d_in: int, d_out: int, timesteps: int):
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)
        self.embed = nn.Embedding(timesteps + 1, d_out)  # row T unused (docs/algorithm.md, "Denoiser")
        nn.init.uniform_(self.embed.weight)               # uniform [0, 1) as in CARD

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.lin(h) * self.embed(t)


class CrossAttention(nn.Module):
    """Pre-norm cross-attention + FFN block: label tokens query image tokens (docs/algorithm.md, "Denoiser").

    q <- q + W_o softmax(Q K^T / sqrt(d_head)) V with Q = W_q LN(q), [K, V] = W_kv LN(img);
    q <- q + FFN(LN(q)). ``keys_values`` is split out because K and V depend on the image only:
    the sampler computes them once per image instead of once per step.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q, self.to_kv, self.to_out = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)   # (B, heads, L, d_head)

    def keys_values(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.to_kv(self.norm_kv(tokens)).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        b, n, d = q.shape
        query = self._split(self.to_q(self.norm_q(q)))
        scores = query @ keys.transpose(-1, -2) * (query.shape[-1] ** -0.5)   # (B, heads, n, N): tiny
        attn = (scores.softmax(dim=-1) @ values).transpose(1, 2).reshape(b, n, d)
        q = q + self.to_out(attn)
        return q + self.ff(self.norm_ff(q))


class ImageEncoder(nn.Module):
    """Backbone map -> spatial tokens (+ learned positions) and a pooled feature (docs/algorithm.md, "Denoiser").

    Only the outputs the denoiser uses are built (``tokens`` for the reverse prior, ``pooled`` for
    DiffMIC's product): a parameter that never gets a gradient would trip DDP's unused-parameter check.
    ``backbone=None`` (config ``model.encoder: prior``) builds no backbone of its own: ``forward``
    then projects a map it is given, the prior network's global feature map (computed anyway for mu),
    of ``channels`` channels at stride ``reduction``.
    """

    def __init__(self, backbone: str | None, image_size: int, token_dim: int, hidden_dim: int, level: int = -1,
                 pretrained: str = "", *, tokens: bool = True, pooled: bool = True,
                 channels: int = 0, reduction: int = 0):
        super().__init__()
        self.features = None if backbone is None else FeatureMap(backbone, level, pretrained)
        if self.features is not None:
            channels, reduction = self.features.channels, self.features.reduction
        if channels < 1 or reduction < 1:
            raise ValueError("an encoder without its own backbone needs the shared map's channels and reduction")
        side = max(1, -(-image_size // reduction))
        self.to_tokens = self.pos = self.to_pooled = None
        if tokens:
            self.to_tokens = nn.Linear(channels, token_dim)
            self.pos = nn.Parameter(torch.zeros(1, side * side, token_dim))
            nn.init.normal_(self.pos, std=0.02)
        if pooled:
            self.to_pooled = nn.Sequential(nn.Linear(channels, hidden_dim), nn.BatchNorm1d(hidden_dim))

    @property
    def shares_prior_features(self) -> bool:
        return self.features is None

    def forward(self, images: torch.Tensor, shared: torch.Tensor | None = None) -> ImageFeatures:
        """Features of ``images``; ``shared`` is the prior's map, used only when there is no own backbone."""
        if self.features is None:
            if shared is None:
                raise ValueError("model.encoder=prior: the prior's feature map must be passed to the encoder")
            fmap = shared.detach()                     # the diffusion loss never trains the prior (docs/algorithm.md)
        else:
            fmap = self.features(images)               # (B, C, h, w)
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
                 heads: int, timesteps: int, reverse_prior: bool = True, feature_product: bool = True,
                 zero_output: bool = False):
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
        if zero_output:  # y0 = mu + output: an untrained denoiser returns the prior's prediction
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    @property
    def shares_prior_features(self) -> bool:
        """True when the image features come from the prior's map (``model.encoder: prior``)."""
        return self.encoder is not None and self.encoder.shares_prior_features

    def encode(self, images: torch.Tensor, shared: torch.Tensor | None = None) -> ImageFeatures:
        """Image features for ``forward``; they do not depend on (y_t, t), so callers compute them once.

        ``shared``: the prior network's global feature map, used if the encoder has no backbone of its own.
        """
        if self.encoder is None:
            return ImageFeatures(None, None)
        feats = self.encoder(images, shared)
        if self.xattn is not None:
            feats.keys, feats.values = self.xattn.keys_values(feats.tokens)
        return feats

    def forward(self, feats: ImageFeatures, y_t: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = F.softplus(self.norms[0](self.lin1(torch.cat([y_t, mu], dim=1), t)))
        if self.xattn is not None:
            keys, values = (feats.keys, feats.values) if feats.keys is not None else \
                self.xattn.keys_values(feats.tokens)
            h = self.xattn(h.view(h.shape[0], -1, self.token_dim), keys, values).flatten(1)
        if self.feature_product:
            h = h * feats.pooled
        h = F.softplus(self.norms[1](self.lin2(h, t)))
        h = F.softplus(self.norms[2](self.lin3(h, t)))
        return self.out(h)
