"""Two-stage classifier methods in one run (crt, lws, gcl, mislas; docs/baselines.md).

Stage 1 (epochs 0 .. train.epochs - 1) trains the whole classifier (``classifier``: backbone + head)
exactly like the single-stage baselines: train.lr, warm-up cosine over train.epochs, gradient
clipping. Stage 2 (baseline.stage2_epochs more) trains only a stage-2 module (a new head, class
scales, a copy of the head) on a class-balanced stream, with the backbone fixed. Why these choices:

- The stage-2 module is the model's ``prior`` attribute, i.e. the optimizer's "prior" group
  (constant train.prior_lr, amsgrad, unclipped): the scheduled group's cosine has reached 0 by
  stage 2, so it could not train a head there, and that same 0 lr keeps the stage-1 parameters
  fixed in stage 2 under every launch mode (DeepSpeed steps every group, even with zero gradients).
- The stage is a function of the epoch (``start_epoch`` -> ``enter``), so resuming needs no extra
  state. The only thing done once, at the first stage-2 epoch, is copying the stage-1 head into the
  stage-2 head (mislas, gcl); the persistent ``in_stage2`` buffer (saved with the weights) says it
  was done, so a resume inside stage 2 does not copy again and one at the boundary does. The same
  buffer tells a loaded checkpoint (best.pt) which head predicts.
- The stage-2 module is built from its own generator (seeded by run.seed), never from the global RNG:
  stage 1 then draws exactly what the single-stage method draws, so cRT and LWS (``stage1_of = "ce"``)
  can start their stage 2 from a CE run's last epoch (``shared_prefix``; docs/tune.md, "Shared training").
- DDP: in stage 2 the backbone runs under torch.no_grad (no backward through it) and in stage 1 the
  stage-2 module is not used; both would leave parameters without a gradient, which DDP without
  ``find_unused_parameters`` rejects at the next step. Instead the loss gets 0 x (sum of the idle
  parameters): every parameter gets a (zero) gradient in every step, so it works whether or not the
  engine turned ``find_unused_parameters`` on (``has_idle_parameters`` depends on ADPM's keys), and
  single-process, DDP and ZeRO see the same gradients. The price: Adam's step count of the
  stage-2 group runs through stage 1, so its bias correction is already ~1 when stage 2 starts
  (the first stage-2 steps move with a larger effective lr than a fresh Adam's). Its moments stay
  exactly 0 and its parameters exactly as built (Adam without weight decay, zero gradients), which is
  what lets runtime/prefix.py give a CE checkpoint that group's state in closed form.
- Validation (and so checkpoint selection) starts with stage 2: a stage-1 checkpoint is the plain
  CE classifier, not the method.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import EpochPlan, SharedPrefix
from .classifiers import ClassifierMethod, ClassifierModel, PooledClassifier, stage1_settings


@dataclass(frozen=True)
class StagedPlan(EpochPlan):
    """An EpochPlan (no warm-up) whose validations start at epoch ``stage2``."""
    stage2: int = 0

    def validates(self, epoch: int, val_every: int) -> bool:
        return epoch >= self.stage2 and ((epoch - self.stage2 + 1) % val_every == 0 or epoch == self.total - 1)


class NewHead(nn.Module):
    """cRT's stage-2 head: the stage-1 head's architecture, freshly initialised (Kang et al. 2020, Sec. 4)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = nn.Linear(head.in_features, head.out_features, bias=head.bias is not None)

    def start(self, head1: nn.Module) -> None:
        pass

    def forward(self, pooled: torch.Tensor, head1: nn.Module) -> torch.Tensor:
        return self.head(pooled)


class CopiedHead(nn.Module):
    """A stage-2 head that continues from the stage-1 head (copied once, at the first stage-2 epoch)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = copy.deepcopy(head)  # same architecture (linear or cosine); its weights are replaced in start

    def start(self, head1: nn.Module) -> None:
        self.head.load_state_dict(head1.state_dict())

    def forward(self, pooled: torch.Tensor, head1: nn.Module) -> torch.Tensor:
        return self.head(pooled)


class ClassScales(nn.Module):
    """LWS: logits_j = f_j * (stage-1 head)_j with learned f (init 1) and the head fixed (Kang et al., Sec. 4)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(num_classes))

    def start(self, head1: nn.Module) -> None:
        pass

    def forward(self, pooled: torch.Tensor, head1: nn.Module) -> torch.Tensor:
        with torch.no_grad():  # the head is fixed: only the scales learn
            base = head1(pooled)
        return base * self.scale


class TwoStageModel(ClassifierModel):
    """``classifier``: the stage-1 network; ``prior``: the stage-2 module (see the module docstring)."""

    def __init__(self, network: PooledClassifier, stage2: nn.Module, class_counts: list[int], loss_fns: tuple,
                 *, loss_name: str, score_scale: float = 1.0, shifted_bn: bool = False):
        super().__init__(network, class_counts, loss_fns[0], loss_name=loss_name, score_scale=score_scale)
        self.prior = stage2
        self.stage2_loss, self.shifted_bn = loss_fns[1], shifted_bn
        self.register_buffer("in_stage2", torch.zeros(()))

    def enter(self, stage2: bool) -> None:
        """Called before every epoch; the stage-2 module starts once (see the module docstring)."""
        if stage2 and not bool(self.in_stage2):
            self.prior.start(self.classifier.head)
        self.in_stage2.fill_(float(stage2))

    def pooled_fixed(self, images: torch.Tensor) -> torch.Tensor:
        """Stage 2: the stage-1 backbone as a fixed feature extractor. BatchNorm in eval mode, or in
        train mode with ``shifted_bn`` (MiSLAS: its running statistics re-estimated on the stage-2 stream)."""
        features = self.classifier.features
        was_training = features.training
        features.train(self.shifted_bn and self.training)
        with torch.no_grad():
            pooled = features(images).mean(dim=(2, 3))
        features.train(was_training)
        return pooled

    def outputs(self, images: torch.Tensor) -> torch.Tensor:
        if not bool(self.in_stage2):
            return self.classifier(images).float()
        return self.prior(self.pooled_fixed(images), self.classifier.head).float()

    def idle_touch(self) -> torch.Tensor:
        """0 x the idle stage's parameters: a zero gradient for each (DDP; module docstring)."""
        idle = self.classifier if bool(self.in_stage2) else self.prior
        return sum(p.sum() for p in idle.parameters()) * 0.0

    def forward(self, images: torch.Tensor, labels: torch.Tensor, **aux) -> dict[str, torch.Tensor]:
        loss_fn = self.stage2_loss if bool(self.in_stage2) else self.loss_fn
        loss = loss_fn(self.outputs(images), labels, self.class_counts, self.epoch, **aux) + self.idle_touch()
        return {self.loss_name: loss, "loss": loss}


class TwoStageMethod(ClassifierMethod):
    """Stage 1: ``loss`` on the natural stream; stage 2: ``stage2_loss`` on a class-balanced stream."""

    shifted_bn = False
    length_key = "baseline.stage2_epochs"  # validations start with stage 2: train.epochs does not lengthen them
    # Keys its stage 2 alone reads (besides baseline.stage2_epochs): stage 1 is the same for every value
    stage2_keys: tuple[str, ...] = ()
    # The single-stage method whose whole training is this method's stage 1 (cRT, LWS: "ce"), or None
    stage1_of: str | None = None

    def epochs(self) -> StagedPlan:
        t = self.cfg.train
        return StagedPlan(0, t.epochs + self.cfg.baseline.stage2_epochs, stage2=t.epochs)

    def shared_prefix(self) -> SharedPrefix:
        """Stage 1 (train.epochs): its stream, losses and LR schedule never read the stage-2 keys, and the
        stage-2 module is built the same whatever they are. With ``stage1_of`` stage 1 is that method's whole
        training (cRT's and LWS's: CE's), so a run of it, or of another such method, is a source too: the
        stage-2 module (``prior``) and ``in_stage2`` are then this run's own, as built."""
        own = ("prior", "in_stage2") if self.stage1_of else ()
        return SharedPrefix(self.cfg.train.epochs, stage1_settings(self.stage1_of, self.stage2_keys), own_state=own)

    def in_stage2(self, epoch: int) -> bool:
        return epoch >= self.cfg.train.epochs

    def phase(self, epoch: int) -> str:
        return f"{self.name} stage {2 if self.in_stage2(epoch) else 1}"

    def class_balanced(self, epoch: int) -> bool:
        return self.in_stage2(epoch)

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        model.set_epoch(epoch)
        model.enter(self.in_stage2(epoch))

    def loss(self, logits, labels, counts, epoch, **aux):
        return F.cross_entropy(logits, labels)

    def stage2_loss(self, logits, labels, counts, epoch, **aux):
        return F.cross_entropy(logits, labels)

    def stage2_module(self, network: PooledClassifier) -> nn.Module:
        raise NotImplementedError

    def make_model(self, class_counts: list[int]) -> TwoStageModel:
        network = self.network(len(class_counts))
        with torch.random.fork_rng(devices=[]):  # its own draws: stage 1 draws what the one-stage method draws
            torch.manual_seed(self.cfg.run.seed * 7919 + 2)
            stage2 = self.stage2_module(network)
        return TwoStageModel(network, stage2, class_counts, (self.loss, self.stage2_loss),
                             loss_name=self.name, score_scale=self.score_scale(), shifted_bn=self.shifted_bn)
