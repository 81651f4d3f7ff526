"""`--calibrate`: the cost of an epoch measured before a study, for candidates the price has no record of.

For each such candidate, its first trial's config is trained here, in the driver, for one short run:
one training fold instead of the trial's K - 1, one prior warm-up epoch (if the method has any) and
one joint epoch, no checkpoint, no evaluation. The seconds of an optimizer step (metrics.json's
`step_time_s`) times the steps of that epoch, times the folds a trial trains on, is the epoch's
training time; validation and the final evaluation are not in it (a recorded trial's cost is, so the
price prefers those). Written to `calibration/<candidate>.json` in the experiment directory and read
by price.plan_rows.
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
    """The short run: one training fold, at most one warm-up and one joint epoch, nothing kept."""
    return {"data.train_parts": cfg.data.train_parts[:1], "train.epochs": 1,
            "train.prior_warmup_epochs": min(cfg.train.prior_warmup_epochs, 1), "train.resume": "",
            "train.checkpoint_every_epochs": 0, "train.checkpoint_every_steps": 0, "run.output_dir": str(run_dir)}


def epoch_seconds(rows: list[dict], scale: float) -> dict:
    """{phase: training seconds of one epoch} from engine.train's epoch rows (`step` is cumulative), x `scale`."""
    out, last = {}, 0
    for row in rows:
        steps = row["step"] - last
        last = row["step"]
        out[row.get("phase", "joint")] = row["step_time_s"] * steps * scale
    return out


def calibrate(experiment, names: list[str], stream=None) -> dict[str, dict]:
    """Measure the candidates `names` of `experiment` (their first trial still to run); {name: record}."""
    from ..runtime.engine import train_once  # imports torch: only when asked to calibrate

    stream = stream or sys.stdout
    records = {}
    for name in names:
        trial = next(t for t in experiment.todo if candidate_of(t) == name)
        cfg = experiment.config_of(trial)
        run_dir = experiment.out / CALIBRATION_DIR / name
        short = apply_settings(cfg, calibration_settings(cfg, run_dir), f"calibration of {name}")
        print(f"calibrating {name}: one short epoch on {short.data.train_parts[0]} ...", file=stream, flush=True)
        rows: list[dict] = []
        start = time.monotonic()
        train_once(short, on_epoch=rows.append, evaluate=False)
        record = {"epoch_s": epoch_seconds(rows, scale=max(1, len(cfg.data.train_parts))),
                  "wall_s": time.monotonic() - start, "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        atomic_write_json(experiment.out / CALIBRATION_DIR / f"{name}.json", record)
        records[name] = record
    return records


def calibrated_epoch_s(out: Path, name: str, warmup: int, total: int) -> float | None:
    """Mean seconds per epoch of a trial of `warmup` prior-only and `total` epochs, from the calibration."""
    path = out / CALIBRATION_DIR / f"{name}.json"
    try:
        per = json.loads(path.read_text())["epoch_s"]
    except (OSError, ValueError, KeyError):
        return None
    joint = per.get("joint", list(per.values())[-1] if per else None)  # a classifier's one phase
    if joint is None or total < 1:
        return None
    return (warmup * per.get("prior warm-up", joint) + (total - warmup) * joint) / total
