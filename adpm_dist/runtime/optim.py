"""Optimizer with parameter groups and the per-iteration LR schedule (docs/algorithm.md, "Training loop")."""
from __future__ import annotations

import math

import torch

from ..config import TrainConfig


def warmup_cosine(epoch_f: float, warmup_epochs: float, total_epochs: float) -> float:
    """LR factor at fractional epoch epoch_f: linear warm-up, then half-cycle cosine to 0 (docs/algorithm.md)."""
    if epoch_f < warmup_epochs:
        return epoch_f / warmup_epochs
    span = max(total_epochs - warmup_epochs, 1e-12)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (epoch_f - warmup_epochs) / span)))


# The model's trainable parts -> parameter groups. Scheduled parts follow set_lr's warm-up cosine at
# train.lr and are gradient-clipped; the prior keeps DiffMIC's constant DCG lr (amsgrad), unclipped.
SCHEDULED_PARTS = ("denoiser", "classifier")  # ADPM's denoiser; a baseline's classifier (adpm_dist/baselines)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """One Adam over the whole model (ZeRO-3-safe), one group per part the model has.

    ADPM: group 0 = denoiser (lr 1e-3, schedule above), group 1 = prior network (DiffMIC DCG: 2e-4,
    amsgrad). Baselines: their ``classifier`` (scheduled like the denoiser) or their ``prior`` alone.
    """
    groups = [{"params": list(part.parameters()), "lr": cfg.lr, "name": name}
              for name in SCHEDULED_PARTS if (part := getattr(model, name, None)) is not None]
    if (prior := getattr(model, "prior", None)) is not None:
        groups.append({"params": list(prior.parameters()), "lr": cfg.prior_lr, "amsgrad": True, "name": "prior"})
    return torch.optim.Adam(groups, betas=(0.9, 0.999), eps=1e-8)


def clipped_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Parameters that train.grad_clip applies to: the scheduled parts (the prior is never clipped)."""
    return [p for name in SCHEDULED_PARTS if (part := getattr(model, name, None)) is not None
            for p in part.parameters()]


def set_lr(optimizer: torch.optim.Optimizer, cfg: TrainConfig, diffusion_epoch_f: float) -> float:
    """LR of the scheduled groups for this iteration; the prior keeps its constant LR (0 after the
    warm-up with train.freeze_prior: DeepSpeed steps every group, and Adam's momentum would move a
    prior with zero gradients).

    Returns the LR of the group that trains, which the logs show: during the prior warm-up the
    prior's, else group 0's (ADPM: the denoiser's; method=prior: the prior's constant one).
    """
    lr = cfg.lr * warmup_cosine(max(diffusion_epoch_f, 0.0), cfg.warmup_epochs, cfg.epochs)
    prior_lr = 0.0 if cfg.freeze_prior and diffusion_epoch_f >= 0 else cfg.prior_lr
    for group in optimizer.param_groups:
        group["lr"] = prior_lr if group.get("name") == "prior" else lr
    warming = [g for g in optimizer.param_groups if diffusion_epoch_f < 0 and g.get("name") == "prior"]
    return (warming or optimizer.param_groups)[0]["lr"]


def restart_group(optimizer, group_name: str) -> int:
    """Forget the optimizer state (Adam moments and step count) of one parameter group.

    Called for the denoiser when joint training starts. Single-process and DDP Adam never stepped
    it during the prior warm-up (its parameters had no gradient), but DeepSpeed ZeRO steps its
    flattened groups with zero gradients, advancing the step count that Adam's bias correction
    uses; restarting makes every launch mode train identically. Returns how many states it dropped.
    """
    inner, zero3 = optimizer, None
    while hasattr(inner, "optimizer"):  # accelerate / DeepSpeed wrappers around the torch optimizer
        if hasattr(inner, "sub_group_to_group_id"):
            zero3 = inner
        inner = inner.optimizer
    if zero3 is not None:  # ZeRO-3 keys the state by flat fp32 sub-group partitions, not by group params
        keys = [zero3.fp32_partitioned_groups_flat[sg] for sg, gid in zero3.sub_group_to_group_id.items()
                if inner.param_groups[gid].get("name") == group_name]
    else:
        keys = [p for g in inner.param_groups if g.get("name") == group_name for p in g["params"]]
    return sum(inner.state.pop(k, None) is not None for k in keys)
