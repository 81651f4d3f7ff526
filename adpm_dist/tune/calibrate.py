"""`--calibrate`: the cost of a trial measured before a study, for candidates the price has no record of.

For each such candidate, its first trial's config is trained here, in the driver, for one short run:
one training fold instead of the trial's K - 1, one prior warm-up epoch (if the method has any) and
two epochs of each later phase (the second is the one timed: the first carries the run's cold start;
validated), then its final evaluation on the trial's evaluation fold, no checkpoint.
From it (`calibration/<candidate>.json`, read by price.plan_rows):
- `epoch_s`: an epoch's training, per phase: the seconds of an optimizer step (`step_time_s`) x the
  epoch's steps x the folds a trial trains on;
- `val_s`: one validation (`val_time_s`), x the same folds (the carve-out grows with the training data);
- `overhead_s`: the rest of the run's wall time: start-up, the final evaluation (a diffusion model's
  sampling chain), writing the outputs; once per trial.
A trial of the method's epoch plan then costs overhead + its epochs' training + its validations
(`trial_seconds`). Those are wall seconds, which another job on the machine stretches; the short run
also records its CPU time (`cpu_per_wall`, the CPU seconds per wall second it actually ran), so its
CPU-hours are the work itself, as a finished trial's are (cost.json `cpu_s`): priced under load, the
CPU figure stays. The short run has the torch threads a trial gets (`--cpus-per-trial`).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..config import Config
from ..files import atomic_write_json
from .contract import apply_settings, candidate_of

CALIBRATION_DIR = "calibration"


def calibration_settings(cfg: Config, run_dir: Path) -> dict:
    """The short run: one training fold, at most one warm-up epoch and two epochs of each later phase (the
    second is timed: the first carries the run's cold start), no checkpoint, from scratch (a trial derived
    from a shared prefix is priced as the training it would do alone)."""
    return {"data.train_parts": cfg.data.train_parts[:1], "train.epochs": 2, "baseline.stage2_epochs": 2,
            "train.prior_warmup_epochs": min(cfg.train.prior_warmup_epochs, 1), "train.resume": "",
            "train.checkpoint_every_epochs": 0, "train.checkpoint_every_steps": 0, "run.output_dir": str(run_dir),
            # a study's sharing is not the short run's: it neither starts from nor keeps anything
            "train.prefix_from": "", "train.keep_prefix": False, "train.keep_validated": False}


def row_seconds(rows: list[dict]) -> list[tuple[str, float]]:
    """(phase, training seconds) of each of engine.train's epoch rows (`step` is cumulative)."""
    out, last = [], 0
    for row in rows:
        out.append((row.get("phase", "joint"), row["step_time_s"] * (row["step"] - last)))
        last = row["step"]
    return out


def epoch_seconds(rows: list[dict], scale: float) -> dict:
    """{phase: training seconds of its last epoch} x `scale` (the last: the first carries the cold start)."""
    return {phase: seconds * scale for phase, seconds in row_seconds(rows)}


def calibrate(experiment, names: list[str], stream=None, threads: int = 1) -> dict[str, dict]:
    """Measure the candidates `names` of `experiment` (their first trial still to run) with ``threads`` torch
    threads (a trial's CPUs); {name: record}."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        return measure_each(experiment, names, stream or sys.stdout)
    finally:
        torch.set_num_threads(before)


def measure_each(experiment, names: list[str], stream) -> dict[str, dict]:
    from ..runtime.engine import train_once  # imports torch: only when asked to calibrate
    from .cost import CpuClock

    records = {}
    for name in names:
        trial = next(t for t in experiment.todo if candidate_of(t) == name)
        cfg = experiment.config_of(trial)
        run_dir = experiment.out / CALIBRATION_DIR / name
        short = apply_settings(cfg, calibration_settings(cfg, run_dir), f"calibration of {name}")
        print(f"calibrating {name}: a short run on {short.data.train_parts[0]} ...", file=stream, flush=True)
        rows: list[dict] = []
        start, clock = time.monotonic(), CpuClock()
        train_once(short, on_epoch=rows.append)
        record = short_run_record(rows, time.monotonic() - start, scale=max(1, len(cfg.data.train_parts)),
                                  cpu_s=clock.seconds())
        atomic_write_json(experiment.out / CALIBRATION_DIR / f"{name}.json", record)
        records[name] = record
    return records


def short_run_record(rows: list[dict], wall_s: float, scale: float, cpu_s: float | None = None) -> dict:
    """calibration/<candidate>.json from the short run's epoch rows, wall time and CPU time (see the module
    docstring)."""
    trained = sum(seconds for _, seconds in row_seconds(rows))  # the untimed first epochs too: the rest is overhead
    validated = [row["val_time_s"] for row in rows if "val_time_s" in row]
    return {"epoch_s": epoch_seconds(rows, scale=scale), "val_s": max(validated, default=0.0) * scale,
            "overhead_s": max(wall_s - trained - sum(validated), 0.0), "wall_s": wall_s,
            **({} if cpu_s is None or wall_s <= 0 else {"cpu_s": cpu_s, "cpu_per_wall": cpu_s / wall_s}),
            "measured": time.strftime("%Y-%m-%d %H:%M:%S")}


def trial_seconds(record: dict, phases: list[int], validations: int) -> float | None:
    """Seconds of a trial whose epoch plan has ``phases`` epochs per phase, in order (ADPM: warm-up, joint; a
    two-stage method: stage 1, stage 2; a classifier: one) and ``validations`` validations, from a
    calibration record (one written before validations and overhead were measured counts neither; a record
    with other phases prices every epoch at its last phase's cost)."""
    per = list((record.get("epoch_s") or {}).values())
    if not per or sum(phases) < 1:
        return None
    costs = per if len(per) == len(phases) else [per[-1]] * len(phases)
    training = sum(n * c for n, c in zip(phases, costs))
    return record.get("overhead_s", 0.0) + training + validations * record.get("val_s", 0.0)


def phase_epochs(plan) -> list[int]:
    """Epochs per phase of a method's epoch plan (methods/base.py EpochPlan; StagedPlan's stage 2)."""
    start = getattr(plan, "stage2", 0) or plan.warmup
    return [start, plan.total - start] if start else [plan.total]


def calibrated_epoch_cost(out: Path, name: str, plan, validations: int = 0):
    """EpochCost (wall and CPU seconds per epoch of a trial of epoch plan ``plan``: its whole cost spread
    over its epochs) from the calibration; CPU None for a record without CPU time (then wall x CPUs)."""
    from .cost import EpochCost

    try:
        record = json.loads((out / CALIBRATION_DIR / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    seconds = trial_seconds(record, phase_epochs(plan), validations)
    if seconds is None:
        return None
    wall = seconds / plan.total
    ratio = record.get("cpu_per_wall")
    return EpochCost(wall, None if ratio is None else wall * ratio, 0)
