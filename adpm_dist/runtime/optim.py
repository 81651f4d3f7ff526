"""Optimizer with parameter groups and the per-iteration LR schedule (docs/algorithm.md, "Training loop")."""
from __future__ import annotations

import math
from contextlib import contextmanager

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


def idle_state(param: torch.Tensor, step: torch.Tensor, amsgrad: bool) -> dict:
    """Adam's state for ``param`` after ``step`` steps with zero gradients (a two-stage method's stage-2 module
    through stage 1, staged.py): the moments stay exactly 0 (0 lerp 0, 0 * beta2 + 0) and the parameter as
    built (its update is 0 / (0 + eps) x lr; Adam here has no weight decay); only the step count moves."""
    state = {"step": step.clone(), "exp_avg": torch.zeros_like(param), "exp_avg_sq": torch.zeros_like(param)}
    if amsgrad:
        state["max_exp_avg_sq"] = torch.zeros_like(param)
    return state


def with_own_groups(saved: dict, own: dict, params: list[torch.Tensor], own_names: tuple[str, ...]) -> dict:
    """An optimizer state dict of another run's model (a shared prefix: runtime/prefix.py) made this optimizer's:
    groups matched by name; a group that ``own_names`` names, or that ``saved`` lacks, is this run's own module
    that the prefix never trained, so it gets its hyper-parameters from ``own`` (this optimizer's state_dict())
    and the closed-form state of ``idle_state`` at the prefix's step count. ``params``: this optimizer's
    parameters in state-dict order."""
    named = {g.get("name"): g for g in saved["param_groups"]}
    step = next((s["step"] for s in saved["state"].values() if "step" in s), None)
    groups, state = [], {}
    for group in own["param_groups"]:
        source = named.get(group.get("name"))
        if source is not None and group.get("name") not in own_names:
            if len(source["params"]) != len(group["params"]):
                raise ValueError(f"optimizer group {group.get('name')!r}: {len(source['params'])} parameters in the "
                                 f"prefix, {len(group['params'])} in this run's model")
            state.update({i: saved["state"][j] for j, i in zip(source["params"], group["params"]) if j in saved["state"]})
            groups.append({**source, "params": list(group["params"])})
            continue
        if step is not None:
            state.update({i: idle_state(params[i], step, group.get("amsgrad", False)) for i in group["params"]})
        groups.append(dict(group))
    return {"state": state, "param_groups": groups}


@contextmanager
def taking_own_groups(optimizer, own_names: tuple[str, ...]):
    """While loading another run's prefix: the optimizer's state_dict is converted by ``with_own_groups``."""
    inner = optimizer
    while hasattr(inner, "optimizer"):  # accelerate's wrapper around the torch optimizer
        inner = inner.optimizer
    params = [p for g in inner.param_groups for p in g["params"]]
    handle = inner.register_load_state_dict_pre_hook(
        lambda opt, saved: with_own_groups(saved, opt.state_dict(), params, own_names))
    try:
        yield
    finally:
        handle.remove()
