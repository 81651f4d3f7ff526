"""The training loop, readable top to bottom: set-up, warm-up and joint epochs, selection, evaluation.

``train(cfg)`` is the one loop every entry point runs (launch/train.py, Ray Tune trials, tests), on
one process, DDP or DeepSpeed ZeRO-2/3 (docs/distributed.md). What differs between methods (their
epoch plan, losses, predictions) comes from the method object (adpm_dist/methods); the loop never
tests a method's name. It never touches the evaluation part until the end, and keeps the checkpoint
``train.select`` chooses on validation data (selection.py): a held-out `val` part or a carve-out of
the training parts (adpm_dist/data/plan.py). Validation and the final test run on ``eval_model``, a
plain copy of the model on every rank loaded with full (gathered) weights: no ZeRO collective inside
sampling, and exactly the weights that go into best.pt.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import Config, ConfigError, from_dict, save_config, set_key, to_dict
from ..data.manifest import Manifest
from ..data.plan import DataPlan
from ..data.feed import DataFeed
from ..data.transforms import normalisation
from ..evaluate import class_losses, classification_metrics, confusion_matrix, format_table
from ..files import atomic_write_json, remove_leftovers
from ..methods import EpochPlan, Method, method_for
from . import selection
from .checkpoint import (enter_epoch, load_best, resume, rng_snapshot, save_best, save_training_state,
                         validated_path)
from .distributed import (build_accelerator, check_launch, configure_for, full_state_dict, has_idle_parameters,
                          make_zero3_safe, mean_over_ranks, ranks_agree, sync_buffers, world_info, zero_stage)
from .ema import EMA
from .prefix import keeps_prefix_at, prefix_loading, prefix_root, restore_buffers
from .optim import build_optimizer, clipped_parameters, restart_group, set_lr
from .sam import forward_backward
from .record import data_identity, run_record
from .interrupt import Interrupted, StopRequest
from .rundir import check_run, forget_failed_start, start_clean, verify_data
from .runlock import RunLock, hold_run_dir
from .sampling import predict, score, validation_losses, write_predictions
from .tracking import RunLog, peak_memory_mb, progress


@dataclass
class Run:
    """Everything the phases of one training run share."""
    cfg: Config
    acc: object
    method: Method
    epochs: EpochPlan
    manifest: Manifest
    plan: DataPlan
    out: Path
    model: torch.nn.Module = None          # as wrapped by accelerate (DDP / DeepSpeed)
    raw: torch.nn.Module = None            # the unwrapped module (EMA, checkpoints)
    eval_model: torch.nn.Module = None     # a plain copy for validation and the final test
    optimizer: object = None
    ema: EMA | None = None
    gen: torch.Generator = None            # t and eps draws, per rank
    log: RunLog | None = None
    loop: dict = field(default_factory=dict)
    validations: list = field(default_factory=list)  # selection.Validation per validated epoch
    skipped: dict = field(default_factory=dict)      # (shard, key) -> bad training sample record, this rank
    clipped: list = field(default_factory=list)
    feed: DataFeed = None                  # how batches are made: data.augment_on, data.cache
    lock: RunLock | None = None            # run.output_dir/run.lock, held by rank 0 for the whole run
    stop: StopRequest | None = None        # SIGTERM/SIGINT: checkpoint at the next step and stop (interrupt.py)
    prefix: Path | None = None             # another run's kept prefix this run starts from (runtime/prefix.py)

    @property
    def names(self) -> list[str]:
        return self.manifest.class_names

    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def batches(self, parts: list[str], *, include_keys=None) -> object:
        d, t = self.cfg.data, self.cfg.train
        return self.feed.eval_batches(parts, t.eval_batch_size, rank=self.acc.process_index,
                                      world_size=self.acc.num_processes, include_keys=include_keys,
                                      num_workers=d.num_workers)


def train(cfg: Config, accelerator=None, on_epoch: Callable[[dict], None] | None = None,
          stop: StopRequest | None = None) -> dict:
    """Train as ``cfg`` says and return the evaluation metrics (also written to run.output_dir).

    ``on_epoch(row)`` is called on every rank after each epoch with that epoch's summary row (losses
    averaged over ranks, lr, step, images/s, step time, peak memory and, on validation epochs,
    ``val_macro_f1``): Ray Tune reports through it. With train.resume=auto a killed run continues
    from its last checkpoint and ends with the same metrics as an uninterrupted one. ``stop``: the flag of
    the entry point's signal handlers; the run then saves a checkpoint and raises ``Interrupted``.
    """
    if cfg.train.select != "refit":
        return train_once(cfg, accelerator, on_epoch, stop=stop)
    first = train_once(refit_selection_config(cfg), accelerator, on_epoch, evaluate=False, stop=stop)
    chosen = first["selection"]
    refit = chosen | {"rule": "refit", "refit_epochs": chosen["epoch"], "refit_parts": first["refit_parts"],
                      "refit_choices": first["choices"]}
    return train_once(refit_config(cfg, chosen["epoch"], first["refit_parts"], first["choices"]), accelerator,
                      on_epoch, selection_record=refit, asked=cfg, stop=stop)


def train_once(cfg: Config, accelerator=None, on_epoch=None, *, evaluate: bool = True,
               selection_record: dict | None = None, asked: Config | None = None, stop=None) -> dict:
    """One training run; ``evaluate=False`` stops after selection (refit's first pass), and
    ``selection_record`` replaces what metrics.json records under ``selection`` (refit's second).
    ``asked``: the config the user gave when ``cfg`` was derived from it (refit): config.yaml and the
    fingerprint are the asked one's (what a reuser compares with), the derived one is kept as
    refit_config.yaml."""
    run = set_up(cfg, accelerator)
    run.stop = stop
    try:
        return run_phases(run, on_epoch, evaluate, selection_record, asked)
    finally:
        if run.lock is not None:
            run.lock.release()


def run_phases(run: Run, on_epoch, evaluate: bool, selection_record: dict | None, asked: Config | None) -> dict:
    """The epochs from the start position, then selection and (``evaluate``) the final evaluation."""
    cfg = run.cfg
    resumed = start_position(run)
    for epoch in range(run.loop["epoch"], run.epochs.total):
        if stopped(run):  # a resumed run that had already stopped on its validation loss
            break
        row = train_epoch(run, epoch, resumed)
        resumed = None
        if run.plan.has_validation and run.epochs.validates(epoch, cfg.train.val_every):
            started = time.perf_counter()
            row.update(validate_and_select(run, epoch))
            row["val_time_s"] = time.perf_counter() - started  # what a validation costs (the price: calibrate.py)
        elif not run.plan.has_validation:
            if cfg.train.track_eval and run.epochs.validates(epoch, cfg.train.val_every):
                current_weights(run)
                row.update(track_eval(run, epoch))
            if epoch == run.epochs.total - 1:
                keep_last(run, epoch)
        end_epoch(run, epoch, row)
        if on_epoch is not None:
            on_epoch(row)
    run.log.close()
    if not evaluate:  # what a refit trains on: exactly this run's training and validation data
        return {"selection": selection_summary(run), "choices": run.loop["best"].get("choices", {}),
                "refit_parts": run.plan.train_parts + ([run.plan.val_part] if run.plan.val_part else [])}
    return final_evaluation(run, selection_record or selection_summary(run), asked or cfg)


# ---------------------------------------------------------------- set-up

def set_up(cfg: Config, accelerator=None) -> Run:
    """Accelerator, data plan, method, model, optimizer (ZeRO-3-safe), EMA; config saved first."""
    from accelerate.utils import set_seed

    t = cfg.train
    acc = accelerator or build_accelerator(t.mixed_precision, find_unused_parameters=has_idle_parameters(t),
                                           log_with=t.log_with, project_dir=cfg.run.output_dir)
    configure_for(acc, t)  # our accumulation / clipping / micro-batch, also into a caller's Accelerator
    check_launch(acc)
    set_seed(cfg.run.seed)
    # Data, resume and output directory are checked on every rank before any rank creates or changes
    # anything (rundir.py): a refused run leaves run.output_dir as it found it.
    checked = check_run(cfg, acc.num_processes)
    acc.wait_for_everyone()
    manifest, plan, out = checked.manifest, checked.plan, Path(cfg.run.output_dir)
    lock = hold_run_dir(acc, out)  # a second run into this directory is refused here, naming this one
    try:
        return prepare_run(cfg, acc, checked, lock)
    except BaseException:
        if lock is not None:
            if checked.resume_from is None:  # nothing this failed start wrote may block the corrected rerun
                forget_failed_start(out)
            lock.release()
        raise


def prepare_run(cfg: Config, acc, checked, lock) -> Run:
    t, manifest, plan, out = cfg.train, checked.manifest, checked.plan, Path(cfg.run.output_dir)
    if acc.is_main_process:
        if checked.resume_from is None and cfg.run.overwrite:
            if removed := start_clean(out):
                acc.print(f"run.overwrite=true: removed the earlier run's {', '.join(removed)} from {out}")
        out.mkdir(parents=True, exist_ok=True)
        for leftover in remove_leftovers(out) + remove_leftovers(out / "checkpoints"):
            acc.print(f"removed {leftover} (a temporary file of a killed run)")
        save_config(cfg, out / "config.yaml")
    acc.print(f"config: {cfg.run.output_dir}/config.yaml | {world_info(acc)}")
    if cfg.data.verify:  # rank 0 reads every shard once: a full download if remote
        verify_data(acc, manifest)
    acc.wait_for_everyone()
    for warning in plan.warnings:
        acc.print(f"warning: {warning}")
    method = method_for(cfg)
    run = Run(cfg, acc, method, epoch_plan(method, t, plan.has_validation), manifest, plan, out, lock=lock,
              prefix=checked.prefix)
    run.feed = DataFeed(cfg.data, manifest, acc.device, mean_std=normalisation(cfg))
    build_model_and_optimizer(run)
    acc.print(f"data: {manifest.root} | train parts {plan.train_parts} ({sum(plan.class_counts)} samples"
              f"{f', {len(plan.unused_keys)} left out by data.train_share' if plan.unused_keys else ''}) | "
              f"{plan.describe_val()} | eval part {plan.eval_part!r} | {run.feed.describe()}")
    acc.print(f"method {cfg.method} | noise levels lambda_j: "
              + (", ".join(f"{n}={v:.3f}" for n, v in noise_levels(run).items()) or "none"))
    acc.print(epochs_line(method.epochs(), t))
    return run


def epoch_plan(method: Method, t, has_validation: bool) -> EpochPlan:
    """The method's epochs, ended after ``train.stop_at_epoch`` when it is set (the schedule unchanged)."""
    full = method.epochs()
    if t.stop_at_epoch > full.total:
        raise ConfigError(f"train.stop_at_epoch={t.stop_at_epoch}: past the run's last epoch ({full.total}); "
                          "raise train.epochs or lower it")
    plan = full.stopped_at(t.stop_at_epoch)
    if has_validation and not any(plan.validates(e, t.val_every) for e in range(plan.total)):
        raise ConfigError(f"train.stop_at_epoch={t.stop_at_epoch}: no epoch up to it validates (warm-up or stage 1 "
                          "only), so no weights could be kept; stop later or set data.val_part=none")
    return plan


def epochs_line(plan, t) -> str:
    """The header's epoch count, saying what is added to train.epochs (ADPM's prior warm-up, a two-stage
    method's stage 2) and when the run ends early on ``train.stop_at_epoch``."""
    asked = t.epochs
    if plan.total == asked:
        line = f"epochs: {plan.total} (train.epochs)"
    elif getattr(plan, "stage2", 0):  # a two-stage method: stage 2 comes after train.epochs
        line = f"epochs: {plan.total} = {asked} stage 1 (train.epochs) + {plan.total - asked} stage 2 (baseline.stage2_epochs)"
    else:
        line = (f"epochs: {plan.total} = {plan.total - asked} warm-up (train.prior_warmup_epochs, added) "
                f"+ {asked} (train.epochs)")
    if t.stop_at_epoch and t.stop_at_epoch < plan.total:
        line += f"; stops after epoch {t.stop_at_epoch} (train.stop_at_epoch), the LR schedule spanning all {plan.total}"
    return line


def build_model_and_optimizer(run: Run) -> None:
    """One optimizer over the model's parameter groups; the wrapped model, its raw module and a copy."""
    acc, cfg, t = run.acc, run.cfg, run.cfg.train
    model = run.method.build(run.plan.class_counts)
    run.eval_model = copy.deepcopy(model).to(acc.device).eval()
    optimizer = build_optimizer(model, t)
    args, kwargs = run.method.example_inputs(cfg.data.image_size, len(run.names))
    if kept := make_zero3_safe(acc, model, lambda: model(*args, **kwargs)):
        acc.print(f"ZeRO-3: kept gathered through forward/backward (modules with non-tensor outputs): {kept}")
    run.model, run.optimizer = acc.prepare(model, optimizer)  # never prepare the streaming loader
    run.raw = acc.unwrap_model(run.model)
    run.ema = EMA(acc, run.raw, t.ema_decay) if t.ema_decay > 0 else None
    run.gen = torch.Generator().manual_seed(cfg.run.seed * 7919 + acc.process_index)
    run.clipped = clipped_parameters(run.raw)  # the denoiser (a baseline's classifier); never the prior


def noise_levels(run: Run) -> dict[str, float]:
    """ADPM's eq. 14 lambda_j by class name; {} for a method without noise levels."""
    levels = getattr(run.eval_model, "levels", None)
    return dict(zip(run.names, levels.tolist())) if levels is not None else {}


def start_position(run: Run) -> dict | None:
    """A fresh run, or the position of a checkpoint (train.resume); the run log starts there."""
    t, acc = run.cfg.train, run.acc
    own, strict, own_state = prefix_loading(run.prefix, run.raw, run.method, deepspeed=bool(zero_stage(acc)))
    run.loop, resumed = resume(acc, run.cfg, run.ckpt_dir, run.gen, run.ema, data=data_of(run), prefix=run.prefix,
                               strict_prefix=strict, own_state=own_state, optimizer=run.optimizer)
    restore_buffers(run.raw, own)  # a prefix's run set them from its own config (SharedPrefix.own_state)
    run.validations = [selection.Validation(**v) for v in run.loop.get("validations", [])]
    run.skipped = {(r["shard"], r["key"]): r for r in (resumed or {}).get("skipped", [])}
    run.log = RunLog(acc, run.out, log_every=t.log_every, images_per_step=t.batch_size * acc.num_processes * t.grad_accum,
                     purge_step=run.loop["step"] if resumed else None, total_epochs=run.epochs.total,
                     first_epoch=run.loop["epoch"], tracker_config=to_dict(run.cfg))
    return resumed


def data_of(run: Run) -> dict:
    """The data identity a checkpoint records and a resume compares (record.data_identity)."""
    return data_identity(run.manifest.shards, run.manifest.dataset)


# ---------------------------------------------------------------- warm-up and joint epochs

def train_epoch(run: Run, epoch: int, resumed: dict | None) -> dict:
    """One epoch of optimizer steps (from a resumed batch position if given); its summary row."""
    cfg, t, acc = run.cfg, run.cfg.train, run.acc
    batches = run.feed.train_batches(run.plan.train_parts, t.batch_size, epoch=epoch, seed=cfg.run.seed,
                                     rank=acc.process_index, world_size=acc.num_processes,
                                     num_workers=cfg.data.num_workers, exclude_keys=run.plan.not_trained,
                                     class_balanced=run.method.class_balanced(epoch))
    usable = len(batches) - len(batches) % t.grad_accum  # whole optimizer steps only
    if usable == 0:
        raise ValueError(f"train.grad_accum={t.grad_accum} exceeds the {len(batches)} batches per epoch")
    batch_iter, first, epoch_rng, sums = enter_epoch(batches, resumed)  # data position of a resumed run
    if run.method.joint_starts(epoch) and first == 0:  # the denoiser's Adam starts with joint training
        restart_group(run.optimizer, "denoiser")
    run.method.start_epoch(run.raw, epoch)
    run.model.train()
    phase = run.method.phase(epoch)
    seen, steps_here, lr, start = 0, 0, 0.0, time.perf_counter()
    bar = progress(total=usable, initial=first, desc=f"epoch {epoch + 1}/{run.epochs.total} ({phase})", leave=False,
                   acc=acc)
    for i in range(first, usable):
        lr = set_lr(run.optimizer, t, (epoch - run.epochs.warmup) + i / usable)
        losses, n = train_step(run, next(batch_iter), epoch)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v
        seen += n
        bar.update()
        bar.set_postfix({k: f"{v / (i + 1):.4f}" for k, v in sums.items()} | {"lr": f"{lr:.2e}"})
        if acc.sync_gradients:
            steps_here += 1
            after_step(run, losses, epoch, i, usable, sums, epoch_rng)
    bar.close()
    elapsed = time.perf_counter() - start
    row = {"epoch": epoch + 1, "phase": phase, "images_per_s": seen * acc.num_processes / elapsed}
    row.update(mean_over_ranks(acc, {k: v / usable for k, v in sums.items()}))
    row.update(lr=lr, step=run.loop["step"], step_time_s=elapsed / max(steps_here, 1),
               max_mem_mb=peak_memory_mb(acc.device))
    return row


def train_step(run: Run, batch: dict, epoch: int) -> tuple[dict[str, float], int]:
    """Forward, backward and (at accumulation boundaries) an optimizer step; the batch's losses."""
    acc, t = run.acc, run.cfg.train
    images, labels = batch["image"].to(acc.device), batch["label"].to(acc.device)
    note_skipped(run, batch.get("skipped", []))
    sync_buffers(acc, run.raw)  # DeepSpeed only: rank 0's BatchNorm statistics, as DDP does
    with acc.accumulate(run.model):
        losses = forward_backward(acc, run.model, lambda: run.method.losses(  # two passes with train.sam_rho > 0
            run.model, images, labels, epoch=epoch, generator=run.gen), run.gen, t.sam_rho)
        if acc.sync_gradients and t.grad_clip > 0 and run.clipped:  # under DeepSpeed its config clips (all)
            acc.clip_grad_norm_(run.clipped, t.grad_clip)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    return {k: v.item() for k, v in losses.items()}, len(labels)


def note_skipped(run: Run, records: list[dict]) -> None:
    """Bad training samples the stream replaced: logged once each, counted, listed in metrics.json."""
    for record in records:
        key = (record["shard"], record["key"])
        if key not in run.skipped:
            print(f"warning: skipped {record['key']!r} of {record['shard']}: {record['reason']}", flush=True)
            run.skipped[key] = record | {"times": 0}
        run.skipped[key]["times"] += 1


def all_skipped(run: Run) -> list[dict]:
    """Every rank's skipped samples (a collective), one record per sample."""
    from accelerate.utils import gather_object

    records = list(run.skipped.values())
    if run.acc.num_processes > 1:
        records = gather_object(records)
    merged: dict = {}
    for r in records:
        merged.setdefault((r["shard"], r["key"]), r | {"times": 0})["times"] += r["times"]
    return sorted(merged.values(), key=lambda r: (r["shard"], r["key"]))


def after_step(run: Run, losses: dict, epoch: int, i: int, usable: int, sums: dict, epoch_rng: dict) -> None:
    """Step count, EMA, logging and the mid-epoch checkpoint (train.checkpoint_every_steps)."""
    run.loop["step"] += 1
    if run.ema is not None:
        run.ema.update(run.raw)
    groups = {g.get("name", str(j)): g["lr"] for j, g in enumerate(run.optimizer.param_groups)}
    run.log.step(run.loop["step"], losses, groups, f"epoch {epoch + 1} batch {i + 1}/{usable}")
    every = run.cfg.train.checkpoint_every_steps
    saved = None
    if every and run.loop["step"] % every == 0 and i + 1 < usable:
        saved = save_checkpoint(run, epoch, i + 1, sums, epoch_rng)
    if run.stop is not None and (signum := run.stop.agreed(run.acc)):  # every rank stops at this same step
        path = saved or save_checkpoint(run, epoch, i + 1, sums, epoch_rng)
        raise Interrupted(signum, run.loop["step"], str(path))


def end_epoch(run: Run, epoch: int, row: dict) -> None:
    """History, the epoch-end checkpoint (train.checkpoint_every_epochs) and the epoch's log lines."""
    every, last = run.cfg.train.checkpoint_every_epochs, epoch == run.epochs.total - 1
    run.loop["history"].append(row)
    if every and ((epoch + 1) % every == 0 or last):
        save_checkpoint(run, epoch + 1, 0, {}, rng_snapshot(), row.get("val_macro_f1"))
    if keeps_prefix_at(run.cfg, run.method) == epoch + 1:  # what train.prefix_from starts other runs from
        save_checkpoint(run, epoch + 1, 0, {}, rng_snapshot(), root=prefix_root(run.ckpt_dir))
    run.log.epoch(row, run.loop["history"])


def save_checkpoint(run: Run, epoch: int, batch: int, sums: dict, epoch_rng: dict, val_f1: float | None = None,
                    root: Path | None = None) -> None:
    run.loop.update(epoch=epoch, batch=batch, validations=[v.__dict__ for v in run.validations])
    rank_state = {"gen": run.gen.get_state(), "rng": rng_snapshot(), "epoch_rng": epoch_rng, "sums": sums,
                  "skipped": list(run.skipped.values())}
    meta = {**run.loop, "val_macro_f1": val_f1, "world_size": run.acc.num_processes,
            "zero_stage": zero_stage(run.acc), "config": to_dict(run.cfg), "data": data_of(run)}
    t = run.cfg.train
    path = save_training_state(run.acc, root or run.ckpt_dir, meta, rank_state, run.ema and run.ema.state_dict(),
                               t.keep_checkpoints if root is None else 1)
    run.acc.print(f"checkpoint: {path} (epoch {epoch + 1}, batch {batch}, step {run.loop['step']})")
    return path


# ---------------------------------------------------------------- selection

def current_weights(run: Run) -> dict:
    """Full weights on every rank (a collective under ZeRO-3), the EMA's if train.eval_ema; loaded
    into eval_model."""
    acc = run.acc
    weights = full_state_dict(acc, run.raw)
    if acc.num_processes > 1:
        acc.print(f"parameters identical on all {acc.num_processes} ranks (sha256 {ranks_agree(acc, run.raw, weights)})")
    weights = run.ema.weights(weights) if run.cfg.train.eval_ema else weights
    run.eval_model.load_state_dict(weights)
    return weights


def validate_and_select(run: Run, epoch: int, weights: dict | None = None) -> dict:
    """Score the validation data; keep these weights as best.pt if ``train.select`` says so. ``weights``:
    validate these instead of the model's (replay.py: an earlier run's validated weights)."""
    if weights is None:
        weights = current_weights(run)
    else:
        run.eval_model.load_state_dict(weights)
    val_parts, val_keys = run.plan.val_source()
    pred = predict(run.method, run.eval_model, run.batches(val_parts, include_keys=val_keys), run.acc,
                   run.cfg.run.seed, "validation")
    val = score(pred, run.names, present_only=True)
    losses = validation_losses(run.method, run.eval_model, run.batches(val_parts, include_keys=val_keys), run.acc,
                               run.cfg.run.seed, epoch=epoch)
    current = selection.Validation(epoch + 1, val["macro_f1"], val["nll"],
                                   losses.get(f"val_{run.method.plateau_loss}", float("nan")))
    run.loop["val_missing"] = [c for c, v in val["per_class"].items() if v["support"] == 0]  # for the choices' flags
    if selection.keeps(run.cfg.train.select, current, kept_validation(run)):
        # the kept epoch's per-class losses: what a noise-law fit (eq. 7) reads from a prior-only run
        run.loop["best"] = current.__dict__ | {"class_losses": class_losses(pred["scores"], pred["labels"], run.names),
                                               "choices": run.method.choices()}  # made for these weights
        keep(run, weights)
    run.validations.append(current)
    if run.cfg.train.keep_validated:  # every validated epoch's weights, for a replay (replay.py)
        save_best(run.acc, weights, validated_path(run.ckpt_dir, epoch + 1), run.cfg,
                  extra={"epoch": epoch + 1, "validation": current.__dict__, "ema": run.cfg.train.eval_ema})
    if run.cfg.train.keep_last and (epoch == run.epochs.total - 1 or stopped(run)):
        save_best(run.acc, weights, run.ckpt_dir / "last.pt", run.cfg,
                  extra={"epoch": epoch + 1, "macro_f1": val["macro_f1"], "class_names": run.names,
                         "ema": run.cfg.train.eval_ema})
    # the prior's own score only where the method has a prior beside it (a baseline's "prior" is itself)
    prior = {"val_prior_macro_f1": val["prior"]["macro_f1"]} if run.method.has_diffusion else {}
    tracked = track_eval(run, epoch) if run.cfg.train.track_eval else {}
    return {"val_macro_f1": val["macro_f1"], **prior, "val_nll": val["nll"], **losses, **tracked}


def track_eval(run: Run, epoch: int) -> dict:
    """The eval part scored with the weights now in ``run.eval_model`` (train.track_eval): its confusion counts
    join ``run.loop["eval_track"]`` (metrics.json) and its macro-F1 the epoch's row. On a CV trial the eval
    part is the held-out fold: a study pools these over folds to fix its recipe's epoch count (study/recipe.py).
    The final evaluation's predict seed, so the last epoch's counts are the final evaluation's; nothing here is
    read by the run's selection, and predict draws from its own generators, so training is unchanged."""
    part = run.plan.eval_part
    pred = predict(run.method, run.eval_model, run.batches([part]), run.acc, run.cfg.run.seed + 1, f"tracking {part}")
    predicted = pred["scores"].argmax(1)
    counts = confusion_matrix(pred["labels"], predicted, len(run.names))
    tracked = [t for t in run.loop.setdefault("eval_track", []) if t["epoch"] != epoch + 1]  # a resume re-tracks
    run.loop["eval_track"] = tracked + [{"epoch": epoch + 1, "confusion": counts.tolist()}]
    return {"tracked_macro_f1": classification_metrics(pred["labels"], predicted, run.names)["macro_f1"]}


def stopped(run: Run) -> bool:
    """Whether the validation loss has plateaued (train.stop_patience; runtime/selection.py, "Stopping")."""
    t = run.cfg.train
    return selection.plateaued([v.loss for v in run.validations], patience=t.stop_patience,
                               min_delta=t.stop_min_delta)


def kept_validation(run: Run) -> selection.Validation | None:
    """The validation of the checkpoint kept so far (None before the first; NaN NLL from an old checkpoint)."""
    best = run.loop["best"]
    if best.get("macro_f1") is None:
        return None
    return selection.Validation(best["epoch"], best["macro_f1"], best.get("nll", float("nan")))


def keep_last(run: Run, epoch: int) -> None:
    """No validation data (a refit on everything): the last epoch's weights are the ones kept."""
    run.loop["best"] = selection.Validation(epoch + 1, float("nan"), float("nan")).__dict__
    keep(run, current_weights(run))


def keep(run: Run, weights: dict) -> None:
    extra = {"epoch": run.loop["best"]["epoch"], "macro_f1": run.loop["best"]["macro_f1"], "class_names": run.names,
             "ema": run.cfg.train.eval_ema}
    save_best(run.acc, weights, run.ckpt_dir / "best.pt", run.cfg, extra=extra)


def selection_summary(run: Run) -> dict:
    kept = kept_validation(run) or selection.Validation(run.loop["best"]["epoch"], float("nan"), float("nan"))
    if not run.validations:
        return {"rule": run.cfg.train.select, "epoch": kept.epoch, "val_metric": None, "tied_epochs": []}
    record = selection.selection_record(run.cfg.train.select, kept, run.validations)
    record["val_class_losses"] = run.loop["best"].get("class_losses", {})
    if stopped(run):
        t = run.cfg.train
        record["stopped"] = {"epoch": run.validations[-1].epoch, "loss": f"val_{run.method.plateau_loss}",
                             "patience": t.stop_patience, "min_delta": t.stop_min_delta}
    if warning := selection.saturation_warning(run.validations):
        run.acc.print(f"warning: {warning}")
        record["warning"] = warning
    return record


# ---------------------------------------------------------------- final evaluation

def final_evaluation(run: Run, selected: dict, asked: Config) -> dict:
    """The kept checkpoint on the evaluation part, once: metrics.json, predictions.csv."""
    acc, plan = run.acc, run.plan
    best = load_best(run.eval_model, run.ckpt_dir / "best.pt")
    acc.print(f"loaded {run.ckpt_dir / 'best.pt'}: epoch {best['epoch']}, validation macro-F1 {best['macro_f1']:.4f}, "
              f"{'EMA' if best.get('ema') else 'live'} weights")
    pred = predict(run.method, run.eval_model, run.batches([plan.eval_part]), acc, run.cfg.run.seed + 1,
                   f"evaluating {plan.eval_part}")
    expected = run.manifest.num_samples[plan.eval_part]
    if len(pred["keys"]) != expected:
        raise RuntimeError(f"evaluation saw {len(pred['keys'])} unique samples of part {plan.eval_part!r}, "
                           f"manifest says {expected}")
    skipped = all_skipped(run)
    metrics = score(pred, run.names)
    choices = run_choices(run, selected)
    if run.method.has_diffusion:  # did the diffusion change anything its own prior would not have said?
        metrics["prior_agreement"] = float(np.mean(pred["scores"].argmax(1) == pred["prior"].argmax(1)))
    d = run.cfg.diffusion
    metrics.update(
        eval_part=plan.eval_part, best_epoch=best["epoch"], val_macro_f1=best["macro_f1"],
        selection=selected, choices=choices, sampler=d.sampler, sampling_steps=d.test_timesteps,
        method=run.cfg.method, method_title=run.method.title, has_diffusion=run.method.has_diffusion,
        noise_levels=noise_levels(run),
        train_counts=dict(zip(run.names, plan.class_counts)), history=run.loop["history"],
        **({"eval_track": run.loop["eval_track"]} if run.loop.get("eval_track") else {}),
        resume_changes=run.loop.get("resume_changes", []), skipped_samples=skipped,
        **({"prefix_from": run.loop["prefix_from"]} if run.loop.get("prefix_from") else {}),
        **run_record(asked, run.manifest.shards),
    )
    if acc.is_main_process:
        if asked is not run.cfg:
            save_config(run.cfg, run.out / "refit_config.yaml")
            save_config(asked, run.out / "config.yaml")
        atomic_write_json(run.out / "metrics.json", metrics)
        write_predictions(run.out / "predictions.csv", pred, run.names, prior=run.method.has_diffusion)
        acc.print(format_table(metrics))
        acc.print(f"wrote {run.out / 'metrics.json'}, {run.out / 'predictions.csv'}, {run.out / 'config.yaml'}")
    acc.wait_for_everyone()
    return metrics


def run_choices(run: Run, selected: dict) -> dict:
    """Every choice this run made on validation data (the kept epoch, the method's own, e.g. a read-out tau),
    each with its value and source, logged once: nothing falls back to a default unsaid."""
    choices = {"epochs": selection.epoch_choice(selected, total=run.epochs.total,
                                                has_validation=run.plan.has_validation,
                                                missing=run.loop.get("val_missing", []))} | run.method.choices()
    for name, c in choices.items():
        run.acc.print(f"choice: {name} = {c['value']:g} ({c['source']})" + (f" [{c['flag']}]" if c.get("flag") else ""))
    return choices


# ---------------------------------------------------------------- train.select=refit

def refit_selection_config(cfg: Config) -> Config:
    """The first pass of ``refit``: the ``best`` rule, in a sub-directory, nothing evaluated."""
    first = from_dict(to_dict(cfg))
    set_key(first, "train.select", "best")
    set_key(first, "run.output_dir", str(Path(cfg.run.output_dir) / "selection"))
    return first


def refit_config(cfg: Config, epochs: int, parts: list[str], choices: dict | None = None) -> Config:
    """The second pass: the first pass's training and validation data together (its training
    parts, its carve-out returned, and its validation part if it had one; never another part such
    as a `val` part a carve-out run did not use), the first pass's LR schedule ended at the chosen
    epoch (warm-up included; ``train.stop_at_epoch``), the last epoch kept, and every other choice the first pass made for its kept weights fixed (a
    read-out tau: the second pass has no validation data to choose it on)."""
    refit = from_dict(to_dict(cfg))
    for choice in (choices or {}).values():
        for key, value in choice["fix"].items():
            set_key(refit, key, value)
    set_key(refit, "data.val_part", "none")
    set_key(refit, "data.train_parts", list(parts))
    set_key(refit, "train.select", "last")
    set_key(refit, "train.stop_patience", 0)  # exactly the chosen epochs ...
    set_key(refit, "train.stop_at_epoch", epochs)  # ... of the same LR schedule as the first pass's
    return refit


__all__ = ["train", "train_once"]
