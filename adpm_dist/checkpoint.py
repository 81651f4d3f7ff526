"""Checkpoints that carry their config, written atomically (a half-written file never replaces a good one)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import Config, to_dict


def atomic_torch_save(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_best(accelerator, model: torch.nn.Module, path: Path, cfg: Config, extra: dict) -> None:
    """Weights + resolved config. Every rank must call this (ZeRO-3 gathers the weights collectively)."""
    state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        atomic_torch_save({"model": state, "config": to_dict(cfg), **extra}, path)
    accelerator.wait_for_everyone()


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_best(model: torch.nn.Module, path: Path) -> dict:
    """Load the selected weights into an unwrapped model (in place); returns the checkpoint dict."""
    ckpt = load_checkpoint(path)
    model.load_state_dict(ckpt["model"])
    return ckpt
