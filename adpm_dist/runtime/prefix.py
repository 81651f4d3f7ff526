"""Shared prefixes (docs/tune.md, "Shared training"): a run that starts from another run's first epochs.

A method's ``shared_prefix()`` (methods/base.py) names its first N epochs (a two-stage method's stage 1,
ADPM's prior warm-up) and the keys that act only after them. A run with ``train.keep_prefix=true`` keeps
a resumable checkpoint at the end of epoch N in ``checkpoints/prefix/`` (never pruned, never what
``train.resume=auto`` continues). A run with ``train.prefix_from=DIR`` whose own ``checkpoints/`` holds
no checkpoint to continue starts from DIR's kept prefix instead of epoch 0: model, optimizer, EMA, RNG
states, step count and history, as a resume would, with its own config and its own buffers
(``SharedPrefix.own_state``). Once it has checkpoints of its own, ``train.resume=auto`` continues those.

It is refused (one ConfigError line, before the run directory is touched) when the method has no shared
prefix, DIR has no kept prefix, the prefix ends at another epoch, or DIR's config differs in a key other
than the ones the prefix does not read (or in the data).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..config import Config, ConfigError, changed_keys, from_dict, result_settings
from .checkpoint import STATE_FILE, complete_checkpoints
from .record import data_differences

PREFIX = "prefix"  # checkpoints/prefix/step_XXXXXXXX: the kept prefix of train.keep_prefix


def prefix_root(ckpt_dir: Path) -> Path:
    return ckpt_dir / PREFIX


def keeps_prefix_at(cfg: Config, method) -> int | None:
    """The (1-based) epoch at whose end this run keeps its prefix checkpoint, or None."""
    prefix = method.shared_prefix() if cfg.train.keep_prefix else None
    return prefix.epochs if prefix is not None else None


def prefix_changes(cfg: Config, settings: dict, saved: dict, saved_settings: dict) -> list[str]:
    """The result-changing keys in which two configs differ once each has its method's prefix settings applied
    (the planner's rule: study/shared.py)."""
    return changed_keys(result_settings(saved) | saved_settings, result_settings(cfg) | settings)


def find_prefix(cfg: Config, method, data: dict, num_processes: int) -> Path:
    """The kept prefix checkpoint ``train.prefix_from`` names, checked against this run (ConfigError otherwise)."""
    source = Path(cfg.train.prefix_from)
    prefix = method.shared_prefix()
    if prefix is None or prefix.source_only:
        why = "whose shared prefix is its whole training: other runs start from it" if prefix else "has no shared prefix"
        raise ConfigError(f"train.prefix_from={source}: method {cfg.method!r} with these settings {why} "
                          "(Method.shared_prefix); leave train.prefix_from empty")
    found = complete_checkpoints(prefix_root(source / "checkpoints"))
    if not found:
        raise ConfigError(f"train.prefix_from={source}: no kept prefix in {prefix_root(source / 'checkpoints')}; "
                          f"that run must train with train.keep_prefix=true through epoch {prefix.epochs} first")
    path = found[-1]
    try:
        loop = json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"train.prefix_from: cannot read {path / STATE_FILE}: {e}") from None
    if (loop["epoch"], loop["batch"]) != (prefix.epochs, 0):
        raise ConfigError(f"train.prefix_from: {path} ends at epoch {loop['epoch']} batch {loop['batch']}; this "
                          f"run's shared prefix is its first {prefix.epochs} epochs")
    if loop.get("world_size", num_processes) != num_processes:
        raise ConfigError(f"train.prefix_from: {path} was written by {loop['world_size']} processes, this run has "
                          f"{num_processes}: the data position and ZeRO shards depend on it")
    saved = method_of(loop["config"]).shared_prefix()
    if saved is None:
        raise ConfigError(f"train.prefix_from: {path} was trained by method {loop['config'].get('method')!r}, "
                          "whose epochs are no shared prefix")
    if changed := prefix_changes(cfg, prefix.settings, loop["config"], saved.settings):
        raise ConfigError(f"train.prefix_from: {path} was trained with other settings in {', '.join(changed)}: "
                          f"its first {prefix.epochs} epochs are not this run's (only "
                          f"{', '.join(prefix.settings) or 'nothing'} may differ); leave train.prefix_from empty to train from epoch 0")
    if loop.get("data") and (differences := data_differences(loop["data"], data)):
        raise ConfigError(f"train.prefix_from: {path} was trained on other data ({'; '.join(differences)})")
    return path


def method_of(saved: dict):
    """The method object of a checkpoint's config (read with today's defaults for keys it predates)."""
    from ..methods import method_for

    return method_for(from_dict(saved))


def is_own(key: str, own_state: tuple[str, ...]) -> bool:
    """Whether a state key is one ``SharedPrefix.own_state`` names: the name itself or a key under it."""
    return any(key == n or key.startswith(n + ".") for n in own_state)


def load_strictly(path: Path, model, own_state: tuple[str, ...], deepspeed: bool = False) -> bool:
    """Whether the prefix's weights load strictly into ``model``: False when they differ only in state the run
    keeps as its own (ADPM's prefix for its adjusted chain: ``chain_logit_shift``; CE's for cRT: the stage-2
    module); a ConfigError when they differ in anything else, or in parameters under DeepSpeed (whose sharded
    optimizer state the conversion of runtime/optim.py cannot reach). Checked on the safetensors file
    accelerate writes (else: strict)."""
    file = path / "model.safetensors"
    if not file.is_file():
        return True
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        differ = set(f.keys()) ^ set(model.state_dict())
    if foreign := sorted(k for k in differ if not is_own(k, own_state)):
        raise ConfigError(f"train.prefix_from: the model in {path} differs from this run's in "
                          f"{', '.join(foreign[:5])}: not this run's prefix")
    if deepspeed and differ & {n for n, _ in model.named_parameters()}:
        raise ConfigError(f"train.prefix_from: {path} is another model's prefix (its parameters differ in "
                          f"{', '.join(sorted(differ)[:3])}), which cannot be loaded under DeepSpeed ZeRO; leave "
                          "train.prefix_from empty to train from epoch 0")
    return not differ


def prefix_loading(prefix: Path | None, model, method, deepspeed: bool = False) -> tuple[dict, bool, tuple]:
    """(the model's own buffers to restore after the load, whether the load is strict, the state names the run
    keeps as its own) for a run that starts from ``prefix`` (None: a fresh run or a resume, nothing to keep)."""
    if prefix is None:
        return {}, True, ()
    own_state = method.shared_prefix().own_state
    return own_buffers(model, own_state), load_strictly(prefix, model, own_state, deepspeed), own_state


def own_buffers(model, names: tuple[str, ...]) -> dict:
    """Copies of the model's buffers that ``names`` name (is_own): what a run started from a prefix keeps."""
    return {n: b.detach().clone() for n, b in model.named_buffers() if is_own(n, names)}


def restore_buffers(model, saved: dict) -> None:
    found = dict(model.named_buffers())
    for name, value in saved.items():
        found[name].copy_(value)
