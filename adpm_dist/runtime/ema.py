"""Exponential moving average of the weights (DiffMIC's EMAHelper, train.ema_decay; 0 = off).

shadow <- decay * shadow + (1 - decay) * param after every optimizer step, for every trainable
parameter (buffers, i.e. BatchNorm statistics, are taken live when the EMA weights are used, as in
DiffMIC). The shadow is a full fp32 copy, identical on every rank: under ZeRO-3 the update reads the
gathered parameters (a collective, so every rank calls ``update``), under DDP/ZeRO-2 the local ones.
"""
from __future__ import annotations

import torch
from torch import nn

from .distributed import gathered_params


class EMA:
    def __init__(self, acc, module: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema_decay must be in (0, 1) for an EMA, got {decay}")
        self.acc, self.decay = acc, decay
        with gathered_params(acc, module):
            self.shadow = {n: p.detach().float().clone() for n, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        with gathered_params(self.acc, module):
            live = dict(module.named_parameters())
            names = list(self.shadow)
            torch._foreach_lerp_([self.shadow[n] for n in names], [live[n].detach().float() for n in names],
                                 1.0 - self.decay)

    def weights(self, live_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A full state dict: ``live_state`` (buffers, frozen parameters) with the averaged parameters."""
        return {k: self.shadow[k].to(v.device, v.dtype) if k in self.shadow else v for k, v in live_state.items()}

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": {k: v.cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict, own=lambda name: False) -> None:
        """``own(name)``: parameters another run's prefix never trained (runtime/prefix.py): they keep their
        shadow as built, which is exactly what averaging an unchanged parameter leaves (lerp toward itself)."""
        missing = {k for k in set(self.shadow) ^ set(state["shadow"]) if not own(k)}
        if missing:
            raise ValueError(f"EMA state does not match the model (differing keys: {sorted(missing)[:5]} ...)")
        for k, v in state["shadow"].items():
            if k in self.shadow and not own(k):
                self.shadow[k].copy_(v)
