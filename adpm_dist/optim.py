"""Optimizer with parameter groups and the per-iteration LR schedule (ADPM_SPEC 2.2, 2.4)."""
from __future__ import annotations

import math

import torch

from .config import TrainConfig


def warmup_cosine(epoch_f: float, warmup_epochs: float, total_epochs: float) -> float:
    """LR factor at fractional epoch epoch_f: linear warm-up, then half-cycle cosine to 0 (ADPM_SPEC 2.4)."""
    if epoch_f < warmup_epochs:
        return epoch_f / warmup_epochs
    span = max(total_epochs - warmup_epochs, 1e-12)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (epoch_f - warmup_epochs) / span)))


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """One Adam over the whole model (ZeRO-3-safe), one group per part.

    group 0 = denoiser (lr 1e-3, schedule above), group 1 = prior network (DiffMIC DCG: 2e-4, amsgrad).
    """
    return torch.optim.Adam([
        {"params": list(model.denoiser.parameters()), "lr": cfg.lr, "name": "denoiser"},
        {"params": list(model.prior.parameters()), "lr": cfg.prior_lr, "amsgrad": True, "name": "prior"},
    ], betas=(0.9, 0.999), eps=1e-8)


def set_lr(optimizer: torch.optim.Optimizer, cfg: TrainConfig, diffusion_epoch_f: float) -> float:
    """Denoiser LR for this iteration; the prior keeps its constant LR. Returns the denoiser LR."""
    lr = cfg.lr * warmup_cosine(max(diffusion_epoch_f, 0.0), cfg.warmup_epochs, cfg.epochs)
    for group in optimizer.param_groups:
        group["lr"] = lr if group.get("name") == "denoiser" else cfg.prior_lr
    return lr


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
