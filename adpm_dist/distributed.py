"""Building the Accelerator so that CPU, DDP and DeepSpeed launches do what they say (STACK_FACTS 1, 2).

Facts measured with accelerate 1.15 / deepspeed 0.19.8 on CPU: the process group must be gloo; with
DeepSpeed, ``Accelerator(cpu=True)`` silently falls back to DDP, and DeepSpeedPlugin.select() wants
transformers' metadata; with multiple CPU processes, only ``cpu=True`` (or ACCELERATE_USE_CPU=1)
gives a real DDP wrap.
"""
from __future__ import annotations

import os

import torch


def _using_deepspeed() -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def _patch_deepspeed_without_transformers() -> None:
    """accelerate 1.15 calls compare_versions('transformers', ...) unconditionally for DeepSpeed."""
    import accelerate.utils.dataclasses as dc
    from accelerate.utils.imports import is_transformers_available

    if getattr(dc.DeepSpeedPlugin, "_adpm_patched", False):
        return
    original = dc.DeepSpeedPlugin.set_deepspeed_weakref
    dc.DeepSpeedPlugin.set_deepspeed_weakref = lambda self: original(self) if is_transformers_available() else None
    dc.DeepSpeedPlugin._adpm_patched = True


def build_accelerator(mixed_precision: str = "no", find_unused_parameters: bool = False):
    """An Accelerator that is right on CPU (gloo) and on CUDA (nccl), for DDP or DeepSpeed launches."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    on_cpu = not torch.cuda.is_available()
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)]
    if on_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a single process must not ask for a group
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    if _using_deepspeed():
        _patch_deepspeed_without_transformers()
        return Accelerator(mixed_precision=mixed_precision, kwargs_handlers=handlers)
    return Accelerator(cpu=on_cpu, mixed_precision=mixed_precision, kwargs_handlers=handlers)
