"""Checkpoints: the selected weights (best.pt) and resumable training states, written atomically.

- ``checkpoints/best.pt``: {model, config, epoch, macro_f1, class_names, ema}: the weights that won
  validation and the resolved config; plain torch, readable by ``load_checkpoint`` without accelerate.
- ``checkpoints/validated/epoch_NNNN.pt`` (train.keep_validated): the same for every validated epoch,
  with its ``selection.Validation``: what runtime/replay.py walks to read the run out another way.
- ``checkpoints/step_XXXXXXXX/``: everything needed to continue exactly (train.resume=auto): the
  Accelerator state (model, optimizer, scaler; DeepSpeed's own sharded files under ZeRO), the loop
  position and history (``trainer_state.json``), each rank's RNG states and partial epoch sums
  (``rank{r}.pt``) and the EMA (``ema.pt``). Written into a hidden temporary directory and renamed
  when complete, so a crash never leaves a half checkpoint that looks whole. Every rank must call
  ``save_training_state``/``load_training_state`` (ZeRO collectives; a hang otherwise). Multi-node
  runs need a filesystem shared by all nodes for ``checkpoints/``.
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from ..config import Config, ConfigError, changed_keys, to_dict
from ..files import atomic_torch_save, atomic_write_text, fsync_dir, fsync_tree

STATE_FILE = "trainer_state.json"  # written last: its presence marks a complete checkpoint


def save_best(accelerator, state: dict[str, torch.Tensor], path: Path, cfg: Config, extra: dict) -> None:
    """Full weights (as ``distributed.full_state_dict`` returns them) + resolved config; every rank calls."""
    if accelerator.is_main_process:
        atomic_torch_save({"model": state, "config": to_dict(cfg), **extra}, path)
    accelerator.wait_for_everyone()


VALIDATED = "validated"  # checkpoints/validated/epoch_NNNN.pt: every validated epoch's weights (train.keep_validated)


def validated_path(ckpt_dir: Path, epoch: int) -> Path:
    """Where the weights validated at (1-based) ``epoch`` are kept."""
    return ckpt_dir / VALIDATED / f"epoch_{epoch:04d}.pt"


def validated_checkpoints(ckpt_dir: Path) -> list[Path]:
    """A run's kept validated weights, in epoch order (temporary files of a killed write never match)."""
    found = (ckpt_dir / VALIDATED).glob("epoch_*.pt") if (ckpt_dir / VALIDATED).is_dir() else []
    return sorted(found, key=lambda p: int(p.stem.split("_")[1]))


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


# ---- RNG states: plain tensors/tuples so that rank files load with weights_only=True ----

def rng_snapshot() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def rng_restore(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- resumable training states ----

def step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:08d}"


def complete_checkpoints(root: Path) -> list[Path]:
    """Finished step checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    dirs = [p for p in root.glob("step_*") if p.is_dir() and (p / STATE_FILE).is_file()]
    return sorted(dirs, key=lambda p: int(p.name.split("_")[1]))


def resolve_resume(resume: str, root: Path) -> Path | None:
    """train.resume -> a checkpoint directory, or None for a fresh run."""
    if resume in ("", "none", "never"):
        return None
    if resume == "auto":
        found = complete_checkpoints(root)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"train.resume={resume!r}: not a complete checkpoint directory (no {STATE_FILE}); "
                                f"complete ones in {root}: {[p.name for p in complete_checkpoints(root)]}")
    return path


def save_training_state(acc, root: Path, loop: dict, rank_state: dict, ema_state: dict | None, keep: int) -> Path:
    """Write ``step_<loop['step']>`` atomically, then keep the last ``keep`` and the best one."""
    final = step_dir(root, loop["step"])
    tmp = root / f".tmp-{final.name}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    try:
        acc.save_state(str(tmp))  # model + optimizer (+ DeepSpeed shards, scaler, accelerate's RNG files)
        torch.save(rank_state, tmp / f"rank{acc.process_index}.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            if ema_state is not None:
                torch.save(ema_state, tmp / "ema.pt")
            atomic_write_text(tmp / STATE_FILE, json.dumps(loop, indent=1))
            fsync_tree(tmp)  # every file on disk before the rename makes the checkpoint count as complete
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as "basic_ios::clear: iostream error"
        shutil.rmtree(tmp, ignore_errors=True)  # a half checkpoint would keep the disk full
        raise write_error(tmp, e) from None
    if acc.is_main_process:
        if final.exists():  # the same step written again (a resumed run re-doing a step)
            old = root / f".old-{final.name}"
            os.replace(final, old)
            shutil.rmtree(old)
        os.replace(tmp, final)
        fsync_dir(root)
        prune(root, keep)
    acc.wait_for_everyone()
    return final


def write_error(path: Path, e: BaseException) -> OSError:
    """A failed checkpoint write as one OSError naming the path and the cause (ENOSPC, with the space left)."""
    code = getattr(e, "errno", None)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if code is None and free is not None and free < 64 * 2**20:  # torch's C++ writer drops errno
        code = errno.ENOSPC
    cause = f"{errno.errorcode.get(code, code)}: {os.strerror(code)}" if code else str(e)
    left = f", {free / 2**20:.0f} MiB free there" if free is not None else ""
    return OSError(code or errno.EIO, f"cannot write the checkpoint {path} ({cause}{left}); the partial checkpoint "
                   "was removed; free space or set train.keep_checkpoints lower, then continue with train.resume=auto")


def prune(root: Path, keep: int) -> list[Path]:
    """Delete all but the last ``keep`` checkpoints and the one with the best validation macro-F1."""
    found = complete_checkpoints(root)
    scored = [(json.loads((p / STATE_FILE).read_text()).get("val_macro_f1"), p) for p in found]
    scored = [(f, p) for f, p in scored if f is not None]
    protect = set(found[-keep:])
    if scored:
        protect.add(max(scored, key=lambda fp: fp[0])[1])
    removed = [p for p in found if p not in protect]
    for p in removed:
        shutil.rmtree(p)
    return removed


def load_training_state(acc, path: Path, strict: bool = True) -> tuple[dict, dict, dict | None]:
    """(loop, this rank's state, EMA state or None) from a checkpoint ``save_training_state`` wrote.
    ``strict=False``: model keys may be missing or extra (a shared prefix's own buffers: runtime/prefix.py)."""
    loop = json.loads((path / STATE_FILE).read_text())
    if loop["world_size"] != acc.num_processes:
        raise ValueError(f"{path} was written by {loop['world_size']} processes, this run has {acc.num_processes}: "
                         "the data position and ZeRO shards depend on it; resume with the same launch")
    acc.load_state(str(path), **({} if strict else {"strict": False}))
    rank_state = torch.load(path / f"rank{acc.process_index}.pt", map_location="cpu", weights_only=True)
    ema_file = path / "ema.pt"
    ema_state = torch.load(ema_file, map_location="cpu", weights_only=True) if ema_file.is_file() else None
    return loop, rank_state, ema_state


def resume(acc, cfg: Config, ckpt_dir: Path, gen: torch.Generator, ema, data: dict | None = None,
           prefix: Path | None = None, strict_prefix: bool = True, own_state: tuple[str, ...] = (),
           optimizer=None) -> tuple[dict, dict | None]:
    """(loop state, this rank's saved state or None): restores model, optimizer, EMA and RNGs in place.
    ``data``: this run's data identity (record.data_identity); runtime/rundir.py has already refused a
    resume on other data that train.resume_changes does not allow. ``prefix``: another run's kept prefix
    (runtime/prefix.py, checked by rundir.py) that a run without a checkpoint of its own starts from, keeping
    the state ``own_state`` names as built (in the model, the EMA and ``optimizer``'s groups)."""
    fresh = {"epoch": 0, "batch": 0, "step": 0, "best": {"epoch": -1, "macro_f1": None}, "history": [],
             "validations": [], "resume_changes": [], "prefix_from": None, "eval_track": []}
    path = resolve_resume(cfg.train.resume, ckpt_dir)
    if acc.is_main_process and ckpt_dir.is_dir():  # saves a killed run left half-written
        for p in [*ckpt_dir.glob(".tmp-step_*"), *ckpt_dir.glob(".old-step_*")]:
            shutil.rmtree(p, ignore_errors=True)
    if path is None:
        if acc.is_main_process:  # a fresh run's validated weights are its own (never an earlier run's epochs)
            shutil.rmtree(ckpt_dir / VALIDATED, ignore_errors=True)
        stale = complete_checkpoints(ckpt_dir)
        if cfg.train.resume == "auto":
            acc.print(f"train.resume=auto: no checkpoint in {ckpt_dir}, starting fresh")
        elif stale:
            acc.print(f"starting fresh (train.resume is empty): removing {len(stale)} checkpoint(s) of an earlier "
                      f"run in {ckpt_dir}; use train.resume=auto to continue it")
        if acc.is_main_process:
            for p in stale:
                shutil.rmtree(p)
        acc.wait_for_everyone()
        if prefix is None:
            return fresh, None
        return start_from_prefix(acc, prefix, gen, ema, fresh, strict_prefix, own_state, optimizer)
    loop, rank_state, ema_state = load_training_state(acc, path)
    gen.set_state(rank_state["gen"])
    if ema is not None and ema_state is not None:
        ema.load_state_dict(ema_state)
    elif ema is not None:
        acc.print(f"warning: {path} has no EMA (train.ema_decay was 0); the EMA restarts from the loaded weights")
    changes = check_resume_changes(cfg, loop["config"], path)
    if data is not None and loop.get("data", data).get("fingerprint") != data.get("fingerprint"):
        changes.append("data.shards")  # allowed (rundir.check_resume), so recorded like any deliberate change
    loop["data"] = data
    if changes:
        acc.print(f"resuming with deliberate changes (train.resume_changes): {', '.join(changes)}")
        loop.setdefault("resume_changes", []).append({"step": loop["step"], "keys": changes})
    if acc.is_main_process:  # later checkpoints belong to a timeline this run abandons
        for p in complete_checkpoints(ckpt_dir):
            if int(p.name.split("_")[1]) > loop["step"]:
                shutil.rmtree(p)
    acc.wait_for_everyone()
    acc.print(f"resumed from {path}: epoch {loop['epoch'] + 1}, batch {loop['batch']}, step {loop['step']} "
              f"(model, optimizer, LR position, EMA, RNG states, data position)")
    state = {k: loop.get(k, v) for k, v in fresh.items()}
    return state, rank_state | {"batch": loop["batch"]}


def start_from_prefix(acc, path: Path, gen: torch.Generator, ema, fresh: dict, strict: bool = True,
                      own_state: tuple[str, ...] = (), optimizer=None) -> tuple[dict, dict]:
    """A fresh run's start from another run's kept prefix (train.prefix_from): everything a resume restores,
    the loop position and the training history included, but nothing the prefix's run validated (CE's run,
    whose whole training is cRT's stage 1, validated; its choices are not this run's); the prefix's own run
    is named in the loop (``prefix_from``). ``own_state``: what this run keeps as built (SharedPrefix)."""
    from .optim import taking_own_groups
    from .prefix import is_own

    with taking_own_groups(optimizer, own_state) if optimizer is not None and own_state else nullcontext():
        loop, rank_state, ema_state = load_training_state(acc, path, strict)
    gen.set_state(rank_state["gen"])
    if ema is not None and ema_state is not None:
        ema.load_state_dict(ema_state, own=lambda name: is_own(name, own_state))
    history = [{k: v for k, v in row.items() if not k.startswith("val_")} for row in loop.get("history", [])]
    state = {k: loop.get(k, v) for k, v in fresh.items()} | {"prefix_from": str(path), "history": history,
                                                            "best": fresh["best"], "validations": [], "eval_track": []}
    acc.print(f"started from the shared prefix {path}: epoch {loop['epoch'] + 1}, step {loop['step']} "
              "(train.prefix_from: model, optimizer, LR position, EMA, RNG states)")
    return state, rank_state | {"batch": loop["batch"]}


def check_resume_changes(cfg: Config, saved: dict, path: Path) -> list[str]:
    """The keys in which ``cfg`` differs from the checkpoint's config; a ConfigError (before any
    training) when some of them are not listed in train.resume_changes: one run, one setting."""
    changed = changed_keys(saved, cfg)
    unexpected = [k for k in changed if k not in cfg.train.resume_changes]
    if unexpected:
        raise ConfigError(f"train.resume: the config differs from the one {path} was trained with in "
                          f"{', '.join(unexpected)}; resuming would mix two settings in one run. Restore them, "
                          "start a fresh run (another run.output_dir), or allow the change deliberately with "
                          f"train.resume_changes={','.join(unexpected)}")
    return changed


def enter_epoch(batches, resumed: dict | None):
    """(batch iterator, first batch index, the epoch's starting RNG state, loss sums so far).

    The streaming loader is deterministic given (seed, epoch): replaying the first b batches from
    the epoch's starting RNG state restores the data position and the augmentation draws exactly;
    then the RNG state at the checkpoint is restored. A fresh epoch just records its starting state.
    """
    first = resumed["batch"] if resumed else 0
    epoch_rng = resumed["epoch_rng"] if resumed else rng_snapshot()
    rng_restore(epoch_rng)
    batch_iter = iter(batches)
    for _ in range(first):
        next(batch_iter)
    if resumed:
        rng_restore(resumed["rng"])
    return batch_iter, first, epoch_rng, dict(resumed["sums"]) if resumed else {}
