"""The long-tail classifier baselines: one network, one loss each (docs/baselines.md).

Every baseline trains ``model.backbone`` cut at ``model.backbone_level``, global average pooling and
a linear head (LDAM: a cosine head, Cao et al. 2019) with Adam at train.lr, the warm-up-cosine
schedule and gradient clipping, like ADPM's denoiser; the methods differ only in their loss (the
pure functions of losses.py), LDAM's head and score scale, and resampling's class-balanced stream.
A checkpoint holds the network (``classifier.*`` or ``prior.*``) and the training counts
(``class_counts``): the losses need them, and prediction reads the class count from them.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..models.backbone import FeatureMap
from . import losses
from .base import Method, SharedPrefix, defaults_of

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]  # (logits, labels, n_j, epoch)


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


class ClassifierModel(nn.Module):
    """A network trained with one loss. ``prior=True`` stores it as ``prior`` (ADPM's own prior
    network, method=prior) so that its weights load into an ADPM and back; else as ``classifier``."""

    def __init__(self, network: nn.Module, class_counts: list[int], loss_fn: LossFn, *, loss_name: str,
                 score_scale: float = 1.0, prior: bool = False):
        super().__init__()
        self.prior, self.classifier = (network, None) if prior else (None, network)
        self.register_buffer("class_counts", torch.as_tensor(class_counts, dtype=torch.float32))
        self.loss_fn, self.loss_name, self.score_scale = loss_fn, loss_name, score_scale
        self.epoch = 0

    @property
    def num_classes(self) -> int:
        return self.class_counts.numel()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def outputs(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (the prior: its fused logits; LDAM: cosines), float32 under autocast too."""
        out = self.prior(images).fused if self.prior is not None else self.classifier(images)
        return out.float()

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = self.loss_fn(self.outputs(images), labels, self.class_counts, self.epoch)
        return {self.loss_name: loss, "loss": loss}

    @torch.no_grad()
    def sample(self, images: torch.Tensor, **_ignored) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, softmax(scores)); the same interface as ADPM.sample (a classifier is deterministic)."""
        scores = self.score_scale * self.outputs(images)
        return scores, F.softmax(scores, dim=1)


class ClassifierMethod(Method):
    """Plain cross-entropy; subclasses override ``loss`` (and a few class attributes)."""

    cosine_head = False

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor, epoch: int) -> torch.Tensor:
        return F.cross_entropy(logits, labels)

    def score_scale(self) -> float:
        return 1.0

    def network(self, num_classes: int) -> nn.Module:
        m = self.cfg.model
        return PooledClassifier(num_classes, m.backbone, m.backbone_level, m.pretrained, cosine=self.cosine_head)

    def make_model(self, class_counts: list[int]) -> ClassifierModel:
        return ClassifierModel(self.network(len(class_counts)), class_counts, self.loss, loss_name=self.name,
                               score_scale=self.score_scale())

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        model.set_epoch(epoch)


def stage1_settings(method: str | None, stage2_keys: tuple[str, ...] = ()) -> dict:
    """What a two-stage method's stage 1 is compared under (SharedPrefix.settings): the stage-2 keys at their
    defaults, and with ``method`` (staged.py ``stage1_of``) the single-stage method whose whole training it is,
    so that CE's run and cRT's or LWS's stage 1 compare equal."""
    return defaults_of(("baseline.stage2_epochs", *stage2_keys)) | ({"method": method} if method else {})


class CrossEntropy(ClassifierMethod):
    name, title = "ce", "cross-entropy"

    def shared_prefix(self) -> SharedPrefix:
        """CE's whole training is cRT's and LWS's stage 1 (the same network, loss, stream and schedule): a study
        keeps it for them to start their stage 2 from; CE itself never starts from another run's epochs."""
        return SharedPrefix(self.cfg.train.epochs, stage1_settings(self.name), source_only=True)


class WeightedCrossEntropy(ClassifierMethod):
    name, title = "weighted_ce", "class-weighted CE"

    def loss(self, logits, labels, counts, epoch):
        return losses.weighted_cross_entropy(logits, labels, counts)


class Focal(ClassifierMethod):
    name, title = "focal", "focal loss"
    search_space = {"baseline.focal_gamma": [0.5, 1.0, 2.0, 5.0]}  # Lin et al. 2017, Table 1a (best 2)

    def loss(self, logits, labels, counts, epoch):
        return losses.focal_loss(logits, labels, gamma=self.cfg.baseline.focal_gamma)


class LogitAdjusted(ClassifierMethod):
    name, title = "logit_adjusted", "logit-adjusted loss"
    search_space = {"baseline.la_tau": [0.5, 1.0, 1.5, 2.0]}  # Menon et al. 2021: tau = 1 is the Bayes rule

    def loss(self, logits, labels, counts, epoch):
        return losses.logit_adjusted_loss(logits, labels, counts, tau=self.cfg.baseline.la_tau)


class BalancedSoftmax(ClassifierMethod):
    name, title = "balanced_softmax", "balanced softmax"

    def loss(self, logits, labels, counts, epoch):
        return losses.balanced_softmax_loss(logits, labels, counts)


class LDAMDRW(ClassifierMethod):
    name, title = "ldam_drw", "LDAM-DRW"
    cosine_head = True
    # Cao et al. 2019: C tuned so that the largest margin is 0.5; DRW from epoch 160 of 200 (0.8)
    search_space = {"baseline.ldam_max_margin": [0.25, 0.5, 1.0], "baseline.drw_start_fraction": [0.6, 0.8]}

    def score_scale(self) -> float:
        return self.cfg.baseline.ldam_scale

    def loss(self, logits, labels, counts, epoch):
        b = self.cfg.baseline
        start = int(b.drw_start_fraction * self.epochs().total)  # first epoch (0-based) with DRW weights
        weight = losses.drw_weights(counts, beta=b.cb_beta, epoch=epoch, start_epoch=start, like=logits)
        return losses.ldam_loss(logits, labels, counts, max_margin=b.ldam_max_margin, scale=b.ldam_scale,
                                weight=weight)


class Resample(ClassifierMethod):
    """Plain CE on a class-balanced stream (every class drawn equally often)."""
    name, title = "resample", "class-balanced resampling"

    def class_balanced(self, epoch: int) -> bool:
        return True


CLASSIFIERS = (CrossEntropy, WeightedCrossEntropy, Focal, LogitAdjusted, BalancedSoftmax, LDAMDRW, Resample)
