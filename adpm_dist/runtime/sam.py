"""Sharpness-aware minimisation (Foret et al., ICLR 2021) as a training option of every method:
``train.sam_rho`` > 0 (0 = off). The engine's ``train_step`` calls ``forward_backward`` for its one
forward-backward; with rho > 0 this makes it SAM's two (Foret et al., Alg. 1):

1. g = grad L(w) (backward; under DDP the gradient is already averaged over the ranks, so every
   rank computes the same perturbation);
2. e = rho g / ||g||_2 (eq. 2, the first-order solution of the inner maximisation), w <- w + e;
3. the gradient at w + e replaces g (a second forward-backward with the same random draws, t and
   eps for ADPM, the GCL cloud, the mixup pair: the generator is rewound), then w <- w - e, and the
   optimizer steps with it as usual (clipping included).

The losses returned (and logged) are those at w. BatchNorm running statistics see both passes.
Not supported: DeepSpeed (the gradients are partitioned inside its engine) and gradient accumulation
(the perturbation needs the whole batch's gradient; the config requires train.grad_accum = 1).
"""
from __future__ import annotations

from collections.abc import Callable

import torch


def _grad_norm(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.norm(torch.stack([p.grad.detach().float().norm(2) for p in params]), 2)


def forward_backward(acc, model: torch.nn.Module, losses_fn: Callable[[], dict], generator: torch.Generator,
                     rho: float) -> dict[str, torch.Tensor]:
    """``losses_fn()`` under autocast and its backward; with ``rho`` > 0 the SAM gradient (module docstring)."""
    start = generator.get_state()
    with acc.autocast():
        losses = losses_fn()
    acc.backward(losses["loss"])
    if rho <= 0:
        return losses
    if getattr(acc.state, "deepspeed_plugin", None) is not None:
        raise ValueError("train.sam_rho > 0 is not supported under DeepSpeed (use DDP or one process)")
    params = [p for p in model.parameters() if p.grad is not None]
    scale = rho / (_grad_norm(params) + 1e-12)
    steps = []
    with torch.no_grad():
        for p in params:
            e = p.grad * scale.to(p.grad.dtype)
            p.add_(e)
            steps.append(e)
            p.grad = None
    generator.set_state(start)  # the same t / eps / cloud / mixup draws as the first pass
    with acc.autocast():
        perturbed = losses_fn()
    acc.backward(perturbed["loss"])
    with torch.no_grad():
        for p, e in zip(params, steps):
            p.sub_(e)
    return losses
