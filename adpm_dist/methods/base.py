"""The one interface between the training loop and a method (``method=`` in the config).

The engine (adpm_dist/runtime/engine.py) never tests a method's name: it asks the method object
for everything that differs between ADPM and a baseline. A method is one subclass of ``Method``
registered under its name (adpm_dist/methods/__init__.py); docs/baselines.md shows how to add one.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..config import Config


@dataclass(frozen=True)
class SharedPrefix:
    """What a method's first ``epochs`` epochs depend on, for a study that trains them once
    (docs/tune.md, "Shared training"): two configs that are equal once ``settings`` are applied to both
    train those epochs identically (same weights, optimizer state, RNG and stream position), so one run
    can start from the other's checkpoint at the end of epoch ``epochs``. ``settings``: dotted key ->
    canonical value of every key that acts only after the prefix (a stage-2 loss, ADPM's noise law).
    ``own_state``: model state the prefix does not decide, which a run started from another run's prefix
    keeps as built: buffers that such keys set when the model is built and that no training changes (ADPM's
    lambda_j), or a module the prefix never trains (a two-stage method's stage-2 module, named by its
    prefix ``prior``: every key under it). ``source_only``: the prefix is the method's whole training
    (CE's, which is cRT's and LWS's stage 1): other runs start from it, this method never does."""
    epochs: int
    settings: dict
    own_state: tuple[str, ...] = ()
    source_only: bool = False


def defaults_of(keys) -> dict:
    """``keys`` at their Config defaults: the canonical values a SharedPrefix compares under."""
    from ..config import flatten, to_dict

    flat = flatten(to_dict(Config()))
    return {k: flat[k] for k in keys}


@dataclass(frozen=True)
class EpochPlan:
    """``warmup`` epochs that neither validate nor train the whole model (ADPM's prior-only warm-up),
    then joint epochs up to ``total``; validation every ``val_every`` joint epochs and at the last."""
    warmup: int
    total: int

    def is_joint(self, epoch: int) -> bool:
        return epoch >= self.warmup

    def validates(self, epoch: int, val_every: int) -> bool:
        return self.is_joint(epoch) and ((epoch - self.warmup + 1) % val_every == 0 or epoch == self.total - 1)

    def stopped_at(self, epoch: int) -> "EpochPlan":
        """This plan ended after ``epoch`` (1-based, warm-up included; 0 = the whole plan). Only the loop
        ends earlier: the LR schedule and every epoch-dependent rule (DRW, stage 2) still follow the full
        plan, so epochs 1..epoch are exactly those of the full run (``train.stop_at_epoch``)."""
        return dataclasses.replace(self, total=epoch) if epoch else self


class Method:
    """What the loop needs from a method. Subclasses set ``name`` and ``title`` and build a model."""

    name: ClassVar[str]
    title: ClassVar[str]                    # what its predictions are called in tables and reports
    has_diffusion: ClassVar[bool] = False   # predictions come from a reverse chain, with a prior beside them
    counts_buffer: ClassVar[str] = "class_counts"  # the buffer a checkpoint stores the class statistics in
    # The key that lengthens the epochs its validations read (a study's "under-trained" warning names it)
    length_key: ClassVar[str] = "train.epochs"
    plateau_loss: ClassVar[str] = "loss"  # the validation loss train.stop_patience watches (a key of losses())
    # The method's default search space: dotted config key -> candidate values (a grid; {} = nothing to
    # tune). Small (2-4 values per key, ~6 points at most), values from the method's paper; a study
    # searches it unless given its own (docs/baselines.md, "Search spaces"). Read it through
    # ``adpm_dist.methods.search_space(name)``, which checks every key and value against the Config.
    search_space: ClassVar[dict[str, list]] = {}

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.num_classes = 0  # set by build()

    @classmethod
    def check(cls, cfg: Config) -> list[tuple[str, str]]:
        """Method-specific config problems as (key, reason) pairs; the config validator reports them."""
        if cfg.train.freeze_prior:
            return [("train.freeze_prior", f"true freezes ADPM's prior after its warm-up: it needs method=adpm "
                     f"(got {cls.name!r})")]
        return []

    def epochs(self) -> EpochPlan:
        return EpochPlan(0, self.cfg.train.epochs)

    def phase(self, epoch: int) -> str:
        return self.name

    def class_balanced(self, epoch: int) -> bool:
        """Whether this epoch's training stream draws every class equally often (resampling, cRT)."""
        return False

    def build(self, class_counts: list[int]) -> nn.Module:
        """The model for a training set with these per-class counts (what the loop wraps and trains)."""
        self.num_classes = len(class_counts)
        return self.make_model(class_counts)

    def make_model(self, class_counts: list[int]) -> nn.Module:
        raise NotImplementedError

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        """Called on the unwrapped model before every epoch (e.g. LDAM-DRW's deferred re-weighting)."""

    def joint_starts(self, epoch: int) -> bool:
        """True at the epoch whose parameter group "denoiser" starts training (its Adam state restarts)."""
        return False

    def losses(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epoch: int,
               generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The training losses of one batch; ``"loss"`` is the one to back-propagate."""
        return model(images, labels)

    def example_inputs(self, image_size: int, num_classes: int) -> tuple[tuple, dict]:
        """(args, kwargs) of one forward that touches every parameter (ZeRO-3 hooks are set up on it)."""
        return (torch.zeros(2, 3, image_size, image_size), torch.zeros(2, dtype=torch.long)), {}

    @torch.no_grad()
    def predictions(self, model: nn.Module, images: torch.Tensor, *, generator: torch.Generator,
                    levels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, prior probabilities) of a batch: argmax(scores) is the prediction."""
        return model.sample(images, generator=generator)

    def choices(self) -> dict[str, dict]:
        """What this run chose on its validation data besides the kept epoch (e.g. a read-out tau): name ->
        record with ``value``, ``source``, ``flag`` (set when nothing could really be chosen) and ``fix`` (the
        config settings that make another run use exactly this value). metrics.json keeps them under
        ``choices``; a study's recipe fixes each one (docs/tune.md, "What the recipe trains")."""
        return {}

    def training_twin(self) -> dict | None:
        """The config settings under which this method TRAINS exactly as configured here (same loss, model,
        stream and epochs: the same weights at every epoch), when it differs only in how it reads them out;
        None when its training is its own. A study trains such a candidate once, as the twin, and replays
        this method's read-out over the twin's validated weights (runtime/replay.py; docs/tune.md,
        "Shared training"): e.g. posthoc_la -> {"method": baseline.posthoc_base}."""
        return None

    def shared_prefix(self) -> SharedPrefix | None:
        """The epochs this method trains identically for every value of some keys that act only later (a
        two-stage method's stage 1, ADPM's prior warm-up), or None. A study trains such a prefix once per
        group of trials and starts the others from its checkpoint (train.keep_prefix, train.prefix_from)."""
        return None

    def prediction_levels(self, model: nn.Module, batches: Iterable[dict], device: torch.device,
                          reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor | None:
        """Anything the evaluation set itself decides before prediction (ADPM: soft-count lambda_j)."""
        return None
