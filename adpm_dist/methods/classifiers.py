"""Baseline models behind ADPM's training-loop interface, so that engine.train runs them unchanged.

The loop needs from a model: ``forward(images, labels, t, eps, joint) -> {..., "loss"}`` (t, eps and
joint are the diffusion's and are ignored here), ``sample(images, **sampling options) -> (scores,
probs)`` for engine.predict, ``soft_count_levels`` (None: no noise levels), ``num_classes``, and its
trainable parts as attributes that optim.build_optimizer turns into parameter groups:

- ``classifier``: the timm backbone of ``model.backbone`` cut at ``model.backbone_level``, global
  average pooling and a linear head (LDAM: a cosine head, Cao et al. 2019); Adam at train.lr with
  the warm-up-cosine schedule, gradient clipping at train.grad_clip, like ADPM's denoiser.
- ``prior`` (method=prior): ADPM's own prior network (DiffMIC's DCG), trained with CE on its fused
  logits exactly as inside ADPM (Adam amsgrad at the constant train.prior_lr, no clipping).

``sample`` returns the scores (logits; LDAM: ldam_scale * cosine) and their softmax. engine.score
reports the argmax of the scores as the method's prediction and the argmax of the probabilities
under "prior": for a baseline both blocks of metrics.json are the same classifier.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import BaselineConfig, Config
from ..models.backbone import FeatureMap
from ..models.adpm import build_prior
from . import losses

CLASSIFIER_METHODS = ("ce", "weighted_ce", "focal", "logit_adjusted", "balanced_softmax", "ldam_drw", "resample")


class CosineHead(nn.Module):
    """cos(feature, w_j) for every class j: both normalised (Cao et al.'s NormedLinear)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, num_classes).uniform_(-1, 1))
        self.weight.data.renorm_(2, 1, 1e-5).mul_(1e5)  # unit columns, as their init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=0)


class PooledClassifier(nn.Module):
    """Backbone feature map -> global average pool -> linear (or cosine) head -> (B, K)."""

    def __init__(self, num_classes: int, backbone: str, level: int = -1, pretrained: str = "", cosine: bool = False):
        super().__init__()
        self.features = FeatureMap(backbone, level, pretrained)
        channels = self.features.channels
        self.head = CosineHead(channels, num_classes) if cosine else nn.Linear(channels, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).mean(dim=(2, 3)))


class Baseline(nn.Module):
    """One baseline: its network (``classifier`` or ``prior``) and its loss (``method``)."""

    def __init__(self, method: str, network: nn.Module, class_counts: list[int], settings: BaselineConfig,
                 epochs: int):
        super().__init__()
        if method == "prior":
            self.prior, self.classifier = network, None
        elif method in CLASSIFIER_METHODS:
            self.classifier, self.prior = network, None
        else:
            raise ValueError(f"method: {method!r} is not a baseline ({', '.join(('prior',) + CLASSIFIER_METHODS)})")
        self.method, self.settings = method, settings
        # n_j of the training set, saved with the weights (the losses need them; a checkpoint records them).
        self.register_buffer("class_counts", torch.as_tensor(class_counts, dtype=torch.float32))
        self.drw_start = int(settings.drw_start_fraction * epochs)  # first epoch (0-based) with DRW weights
        self.epoch = 0
        self.score_scale = settings.ldam_scale if method == "ldam_drw" else 1.0

    @property
    def num_classes(self) -> int:
        return self.class_counts.numel()

    def set_epoch(self, epoch: int) -> None:
        """The loop calls this at the start of every epoch (LDAM-DRW switches its weights on by epoch)."""
        self.epoch = epoch

    def outputs(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (the prior: its fused logits; LDAM: cosines), float32 under autocast too."""
        out = self.prior(images).fused if self.prior is not None else self.classifier(images)
        return out.float()

    def loss(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n, s = self.class_counts, self.settings
        if self.method in ("ce", "resample", "prior"):  # resample: plain CE on a class-balanced stream
            return F.cross_entropy(out, labels)
        if self.method == "weighted_ce":
            return losses.weighted_cross_entropy(out, labels, n)
        if self.method == "focal":
            return losses.focal_loss(out, labels, s.focal_gamma)
        if self.method == "logit_adjusted":
            return losses.logit_adjusted_loss(out, labels, n, s.la_tau)
        if self.method == "balanced_softmax":
            return losses.balanced_softmax_loss(out, labels, n)
        weight = losses.drw_weights(n, s.cb_beta, self.epoch, self.drw_start, out)  # ldam_drw
        return losses.ldam_loss(out, labels, n, s.ldam_max_margin, s.ldam_scale, weight)

    def forward(self, images: torch.Tensor, labels: torch.Tensor, t: torch.Tensor | None = None,
                eps: torch.Tensor | None = None, joint: bool = True) -> dict[str, torch.Tensor]:
        """The training loss; t, eps and joint belong to ADPM's interface and are ignored."""
        loss = self.loss(self.outputs(images), labels)
        return {"prior_ce" if self.method == "prior" else self.method: loss, "loss": loss}

    @torch.no_grad()
    def sample(self, images: torch.Tensor, **_sampling_options) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, softmax(scores)): what engine.predict stores as y0 and as the prior's probabilities."""
        scores = self.score_scale * self.outputs(images)
        return scores, F.softmax(scores, dim=1)

    def soft_count_levels(self, *_args, **_kwargs) -> None:
        """A classifier has no noise levels to re-estimate (noise.test_levels is ADPM's option)."""
        return None


def build_baseline(cfg: Config, class_counts: list[int]) -> Baseline:
    """The baseline ``cfg.method`` for a training set with these per-class counts."""
    k, m = len(class_counts), cfg.model
    if cfg.method == "prior":  # exactly ADPM's prior network (models/adpm.py build_model)
        network = build_prior(cfg, k)
    else:
        network = PooledClassifier(k, m.backbone, m.backbone_level, m.pretrained, cosine=cfg.method == "ldam_drw")
    epochs = training_epochs(cfg)[1]
    return Baseline(cfg.method, network, class_counts, cfg.baseline, epochs)


def training_epochs(cfg: Config) -> tuple[int, int]:
    """(epochs of ADPM's prior-only warm-up, total epochs) for ``cfg.method``.

    adpm: (train.prior_warmup_epochs, prior_warmup_epochs + epochs), as always; prior: (0, the
    same total), i.e. as long as the prior trains inside ADPM, every epoch validated; the classifier
    baselines: (0, train.epochs) (train.prior_warmup_epochs does not apply to them).
    """
    t = cfg.train
    if cfg.method == "adpm":
        return t.prior_warmup_epochs, t.prior_warmup_epochs + t.epochs
    if cfg.method == "prior":
        return 0, t.prior_warmup_epochs + t.epochs
    return 0, t.epochs
