"""The Experiment contract: what every kind of study hands the runner, and what every trial tells it.

A kind of study (the noise grid, --fit, a study of candidates, a batch of named runs) plans an
`Experiment`; `search.run_search` runs it on Ray Tune without knowing which kind it is. Each trial of
an experiment gives a `TrialRecord`, the only fields the runner, the progress table and the per-fold
scheduler read: no kind fakes another kind's fields (a study trial has no alpha or beta).

A cross-validated trial trains on every fold but its own (and its outer fold, if inner) and is
scored on its fold: `cv_settings` is that part of a trial's settings, shared by every CV kind;
each kind adds its own keys and owns its reserved keys (`CV_RESERVED` | the kind's).

No Ray and no torch here: everything is checked before a cluster starts.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..config import Config, ConfigError, TrainConfig, set_key, validate


@dataclass(frozen=True)
class TrialRecord:
    """What the runner, the progress table and the scheduler know of a trial, whatever its kind."""
    id: str                         # unique in the experiment: its Tune trial name and run directory name
    group: str                      # one configuration: the progress table's "best so far" averages its folds
    fold: int                       # the evaluation fold (a batch run: 0)
    outer: int | None               # nested CV: the outer fold also left out; None for a CV trial
    seed: int | None                # a study's training seed; None where the kind has one seed
    eval_part: str                  # the part the trial is scored on
    candidate: str | None = None    # early stopping's `candidate` scope races only one candidate's points
    derived_from: str | None = None  # the trial whose training this one replays (a study's read-out candidate,
                                     # study/shared.py): it is never sent to Ray and costs no training

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Trial(Protocol):
    """A trial of any kind: its record, and its kind's own fields for search.json (`to_dict`)."""
    @property
    def id(self) -> str: ...

    def record(self) -> TrialRecord: ...

    def to_dict(self) -> dict: ...


@runtime_checkable
class Experiment(Protocol):
    """A planned experiment, as `search.run_search` runs it (docs/tune.md, "The Experiment contract")."""
    @property
    def out(self) -> Path: ...                  # the experiment directory (absolute: Ray changes directory)

    @property
    def base(self) -> Config: ...               # the config every trial starts from

    @property
    def trials(self) -> list: ...               # every trial of the experiment

    @property
    def todo(self) -> list: ...                 # the trials still to run (--resume leaves the finished out)

    @property
    def total_epochs(self) -> int: ...          # the progress table's N: the longest trial's epoch plan

    @property
    def show_eval(self) -> bool: ...            # False: never print an evaluation score while running

    @property
    def logs(self) -> str: ...                  # where a trial's train.log is, for the first line

    def config_of(self, trial) -> Config: ...   # the trial's resolved config (set as values, never text)

    def settings_of(self, trial) -> dict: ...   # dotted key -> value: what the trial sets itself

    def manifest(self) -> dict: ...             # search.json: what the evaluator reads back


class OneEpochPlan:
    """What the runner reads of an experiment whose trials all train its base config's epoch plan and log
    into trials/<id>/ (the grid, --fit): the progress table's N, its evaluation column, the log path."""
    @property
    def total_epochs(self) -> int:
        from ..methods import method_for  # imports torch: only once trials are about to run

        return method_for(self.base).epochs().total

    show_eval = True

    @property
    def logs(self) -> str:
        return str(self.out / "trials" / "<trial>" / "train.log")


def candidate_of(trial) -> str:
    """What a trial is priced and calibrated under: its record's candidate, else its group."""
    record = trial.record()
    return record.candidate or record.group


# Keys every cross-validated trial sets itself; overriding them by key=value would break the protocol.
CV_RESERVED = {
    "data.eval_part": "each trial evaluates fold k; use --folds",
    "data.train_parts": "each trial trains on the other folds",
    "data.shards": "use --shards",
    "run.output_dir": "use --output",
}


def check_reserved(overrides: list[str], reserved: dict[str, str], who: str) -> None:
    """One line naming the key, `who` sets it and the way to set it instead."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in reserved:
            raise ConfigError(f"{key} is set by the {who} for every trial ({reserved[key]})")


def supports_resume() -> bool:
    """engine.train can continue a killed run from its last checkpoint (train.resume=auto)."""
    return "resume" in {f.name for f in dataclasses.fields(TrainConfig)}


def train_parts(fold: int, outer: int | None, folds: int) -> list[str]:
    """The folds a trial trains on: all but its evaluation fold (and its outer fold, if inner)."""
    return [f"fold{k}" for k in range(folds) if k not in (fold, outer)]


def trial_dir(out: Path, trial) -> Path:
    return trial_dir_of(out, trial.id)


def trial_dir_of(out: Path, trial_id: str) -> Path:
    """Where trial ``trial_id`` of the experiment in ``out`` runs (its run.output_dir)."""
    return Path(out) / "trials" / trial_id


def cv_settings(trial, folds: int, out: Path) -> dict:
    """The settings a cross-validated trial sets itself, shared by every kind: parts, output, resume."""
    settings = {"data.eval_part": f"fold{trial.fold}",
                "data.train_parts": train_parts(trial.fold, trial.outer, folds),  # named: never the outer fold
                "run.output_dir": str(trial_dir(out, trial))}  # stable across retries
    if supports_resume():
        settings["train.resume"] = "auto"  # a retried trial continues from its last checkpoint
    return settings


def apply_settings(base: Config, settings: dict, where: str = "") -> Config:
    """`base` with `settings` set as typed values (set_key), then validated as a whole (a searched value out
    of range, `train.lr: [-1]`, fails here, before any trial starts); a bad key or value names `where`."""
    cfg = copy.deepcopy(base)
    try:
        for key, value in settings.items():
            set_key(cfg, key, value)
        validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None
    return cfg


__all__ = ["TrialRecord", "Trial", "Experiment", "candidate_of", "CV_RESERVED", "check_reserved", "supports_resume",
           "train_parts", "trial_dir", "cv_settings", "apply_settings"]
