"""A batch of named runs on the study engine: the kind of study the benchmarks are.

The noise grid expands (alpha, beta) x folds, a study candidates x points x seeds x folds; a batch
has nothing to expand: each trial is one resolved config with its own run directory, chosen by the
caller (benchmarks/quality.py and the scripts built on it). It runs through the same runner as the
others (search.run_search: a loopback cluster started here, or the cluster in RAY_ADDRESS / --address),
the same trainable (engine.train in the trial, train.log, attempts.jsonl, cost.json), retries and
progress table, so a benchmark on a cluster is the same command with RAY_ADDRESS set. The caller
reads the run directories afterwards; a batch has no evaluator of its own.

No Ray imports here: Ray is imported by the runner once trials are about to run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, from_dict, to_dict
from .contract import TrialRecord
from .experiment import SEARCH_FORMAT

BATCH_MODE = "runs"


@dataclass(frozen=True)
class BatchRun:
    """One run of a batch: a unique id (its Tune trial name), what the progress table groups it under
    ("best so far"), and its resolved config as plain values (typed, never re-parsed from text)."""
    id: str
    group: str
    config: dict

    @property
    def run_dir(self) -> Path:
        return Path(self.config["run"]["output_dir"])

    def record(self) -> TrialRecord:
        # one fold per run: the per-fold scheduler compares a batch's runs of the same seed
        return TrialRecord(self.id, self.group, 0, None, self.config["run"]["seed"], self.config["data"]["eval_part"])

    def to_dict(self) -> dict:
        return self.record().to_dict()


def batch_run(run_id: str, group: str, cfg: Config) -> BatchRun:
    """A BatchRun of `cfg`, whose run.output_dir must be absolute (Ray runs trials in their own directory)."""
    if not Path(cfg.run.output_dir).is_absolute():
        raise ValueError(f"run {run_id}: run.output_dir must be absolute for a Ray trial, got {cfg.run.output_dir!r}")
    return BatchRun(run_id.replace("/", "_"), group, to_dict(cfg))


@dataclass
class RunBatch:
    """A contract.Experiment: every run in `runs`, Ray's state and search.json under `out`."""
    out: Path
    runs: list[BatchRun]
    show_eval: bool = True  # False: the progress table never prints an evaluation score

    @property
    def trials(self) -> list[BatchRun]:
        return self.runs

    @property
    def todo(self) -> list[BatchRun]:
        return self.runs  # the caller leaves finished runs out

    @property
    def base(self) -> Config:
        return self.config_of(self.runs[0])

    @property
    def total_epochs(self) -> int:
        """The longest run's epochs (the progress table's N): a batch mixes methods with different plans."""
        from .search import epochs_per_trial

        return max(epochs_per_trial(self.config_of(r)) for r in self.runs)

    @property
    def logs(self) -> str:
        return "train.log in each run's directory"

    def config_of(self, run: BatchRun) -> Config:
        return from_dict(run.config)

    def settings_of(self, run: BatchRun) -> dict:
        return {"run.output_dir": str(run.run_dir)}

    def manifest(self) -> dict:
        return {"format": SEARCH_FORMAT, "mode": BATCH_MODE, "runs": [r.to_dict() for r in self.runs],
                "written": time.strftime("%Y-%m-%d %H:%M:%S")}


def run_batch(out: str | Path, runs: list[BatchRun], *, jobs: int = 1, cpus_per_run: float | None = None,
              gpus_per_run: float = 0.0, address: str | None = None, max_failures: int = 1, show_eval: bool = True,
              stream=None) -> dict:
    """Run `runs` as Ray Tune trials, `jobs` at a time; {run id: finished | failed | ...}.

    A local cluster gets `cpus_per_run` logical CPUs per run (default: this machine's CPUs / jobs, which
    is also each run's torch thread count, as Ray sets OMP_NUM_THREADS from it). A failed run is retried
    `max_failures` times from its last checkpoint when its config says train.resume=auto."""
    import os

    from .search import ClusterOptions, Resources, run_search

    if not runs:
        return {}
    ids = [r.id for r in runs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"run ids must be unique: {sorted(i for i in set(ids) if ids.count(i) > 1)}")
    cpus = cpus_per_run or max(1.0, (os.cpu_count() or 1) // jobs)
    resources = Resources(cpus_per_trial=cpus, gpus_per_trial=gpus_per_run, max_concurrent=jobs,
                          max_failures=max_failures)
    batch = RunBatch(Path(out).resolve(), runs, show_eval)
    return run_search(batch, resources, ClusterOptions(address=address), stream=stream)

