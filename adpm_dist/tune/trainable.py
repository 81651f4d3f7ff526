"""The Ray Tune trainable: one trial = one call of engine.train, the loop launch/train.py runs.

Single-process trials call ``engine.train(cfg, on_epoch=...)`` right in the Tune trial. Multi-worker
trials make the Tune trial a driver that runs a Ray Train ``TorchTrainer``; every worker builds its
own Accelerator (``distributed.build_accelerator``) on the process group Ray Train set up, and
``TuneReportCallback`` forwards rank 0's reports to Tune (docs/tune.md, "Cluster": inside a Tune function use
``ray.tune.report``, inside Train workers ``ray.train.report``; the other one raises).

Every start of a trial appends a line to ``attempts.jsonl`` in its run directory, so retries after a
failure are visible; logs go to ``train.log`` there (the driver shows the progress table instead).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from ..config import Config, from_dict
from ..files import atomic_write_json
from .contract import supports_resume
from .cost import COST_FILE, CpuClock


def numeric(row: dict, warmup: int = 0) -> dict:
    """The numbers of an epoch row (Tune/ASHA want numbers; `phase` becomes `joint` 0/1), and
    `joint_epoch`, the epochs that trained the whole model: ASHA's time axis, so that a diffusion
    method after its `warmup` prior-only epochs is compared with a classifier trained as long."""
    out = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if "phase" in row:
        out["joint"] = int(row["phase"] == "joint")
    if "epoch" in row:
        out["joint_epoch"] = row["epoch"] - warmup
    return out


def epoch_plan(cfg: Config):
    """The method's EpochPlan (prior-only warm-up, total): what a trial reports and ASHA's clock."""
    from ..methods import method_for  # imports torch: only once trials are about to run

    return method_for(cfg).epochs()


def final_report(metrics: dict) -> dict:
    """Reported once after training. No `epoch` / `val_macro_f1` keys, so ASHA ignores it; not `done`, which
    Tune reserves (it would end the trial before a multi-worker trial's TorchTrainer has shut down)."""
    keys = ("macro_f1", "accuracy", "macro_precision", "macro_recall")
    return {"evaluated": 1} | {f"eval_{k}": metrics[k] for k in keys} | {"eval_prior_macro_f1": metrics["prior"]["macro_f1"]}


def record_attempt(out: Path, trial_id: str) -> int:
    out.mkdir(parents=True, exist_ok=True)
    log = out / "attempts.jsonl"
    n = sum(1 for _ in log.open()) + 1 if log.is_file() else 1
    with log.open("a") as f:
        f.write(json.dumps({"attempt": n, "trial": trial_id, "pid": os.getpid(), "node": socket.gethostname(),
                            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                            "mode": "resume" if supports_resume() else "restart"}) + "\n")
    return n


def add_cost(out: Path, seconds: float, res: dict, cpu_s: float | None = None, new_attempt: bool = True,
             note: dict | None = None) -> dict:
    """cost.json (cost.py): the trial's wall time over its attempts, its process CPU time (`cpu_s`, None when
    the work ran in other processes: a multi-worker trial), GPU time (wall x GPUs held) and what it held.
    `new_attempt=False`: more of an attempt already counted (AttemptCost, after every epoch). `note`: what
    the cost leaves out (prefix_note: the epochs another trial trained)."""
    path = out / COST_FILE
    cost = json.loads(path.read_text()) if path.is_file() else {"wall_s": 0.0, "attempts": 0}
    gpus = res["workers"] * res["gpus"]
    first = cost["attempts"] == 0
    cost["gpu_s"] = cost.get("gpu_s", cost["wall_s"] * gpus) + seconds * gpus  # older files: wall x GPUs
    cost["wall_s"] += seconds
    cost["attempts"] += int(new_attempt or first)
    if cpu_s is not None and (first or "cpu_s" in cost):  # an attempt without CPU time makes the sum unknown
        cost["cpu_s"] = cost.get("cpu_s", 0.0) + cpu_s
    else:
        cost.pop("cpu_s", None)
    cost |= {"processes": res["workers"], "cpus": res["workers"] * res["cpus"], "gpus": gpus} | (note or {})
    atomic_write_json(path, cost)
    return cost


def prefix_note(cfg: Config) -> dict:
    """A trial started from another trial's kept prefix (train.prefix_from; study/shared.py) costs only the
    epochs after it: cost.json names that trial (its directory name, the trial id)."""
    return {"prefix_from": Path(cfg.train.prefix_from).name} if cfg.train.prefix_from else {}


class AttemptCost:
    """One attempt's cost, added to cost.json after every epoch and at its end, so that an attempt that is
    killed (a node lost, Ctrl-C on the driver) has cost what it ran up to its last epoch."""
    def __init__(self, out: Path, res: dict, note: dict | None = None):
        self.out, self.res, self.new, self.note = out, res, True, note
        self.wall, self.clock = time.monotonic(), CpuClock()

    def tick(self) -> dict:
        now, cpu = time.monotonic(), self.clock.lap()
        cost = add_cost(self.out, now - self.wall, self.res, cpu, new_attempt=self.new, note=self.note)
        self.wall, self.new = now, False
        return cost


@contextlib.contextmanager
def logs_to(path: Path):
    """Send this process's Python-level stdout/stderr (prints, tqdm, warnings) to `path`."""
    with open(path, "a", buffering=1) as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        yield


def trial_config_of(trial: dict) -> Config:
    """The trial's Config from the plain values Tune handed over (search.trial_payloads): typed as they were
    set, so a shard path with " #", spaces or non-ASCII characters arrives verbatim."""
    return from_dict(trial["config"])


def run_trial(config: dict) -> None:
    """Tune function trainable. `config` = {"trial": search.trial_payloads() item, "resources": {...}}."""
    from ray import tune

    trial, res = config["trial"], config["resources"]
    cfg = trial_config_of(trial)
    out = Path(cfg.run.output_dir)
    attempt = record_attempt(out, trial["id"])
    if res["workers"] > 1:
        _run_distributed(config, attempt)
        return
    from ..runtime.engine import train

    cost = AttemptCost(out, res, prefix_note(cfg))

    def on_epoch(row: dict) -> None:
        cost.tick()  # a killed attempt keeps what it cost up to here
        tune.report(numeric(row, warmup))

    try:
        with logs_to(out / "train.log"):
            print(f"== {trial['id']}: attempt {attempt}, pid {os.getpid()}", flush=True)
            warmup = epoch_plan(cfg).warmup
            metrics = train(cfg, on_epoch=on_epoch)
    finally:  # a failed attempt cost time too (a killed one: up to its last epoch)
        cost.tick()
    tune.report(final_report(metrics))


def _run_distributed(config: dict, attempt: int) -> None:
    """The Tune trial as a driver of a Ray Train job with `workers` Accelerate processes."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trial, res = config["trial"], config["resources"]
    gpus = int(res["gpus"])  # whole GPUs per worker (checked by the CLI): no fractional GPUs with DDP
    scaling = ray.train.ScalingConfig(num_workers=res["workers"], use_gpu=gpus > 0,
                                      resources_per_worker={"CPU": res["cpus"], **({"GPU": gpus} if gpus else {})})
    run = ray.train.RunConfig(name=f"{trial['id']}-attempt{attempt}-{int(time.time())}",  # unique: no silent resume
                              storage_path=res["train_storage"], callbacks=[TuneReportCallback()],
                              failure_config=ray.train.FailureConfig(max_failures=0))  # Tune retries the trial
    start = time.monotonic()
    try:
        TorchTrainer(train_worker, train_loop_config=config, scaling_config=scaling, run_config=run).fit()
    finally:
        cfg = trial_config_of(trial)
        add_cost(Path(cfg.run.output_dir), time.monotonic() - start, res, note=prefix_note(cfg))


def train_worker(config: dict) -> None:
    """Runs in every Ray Train worker: an Accelerator on Ray's process group, then the same engine.train."""
    import ray.train

    from ..runtime.distributed import build_accelerator, has_idle_parameters
    from ..runtime.engine import train

    cfg = trial_config_of(config["trial"])
    out = Path(cfg.run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank = ray.train.get_context().get_world_rank()
    log = out / ("train.log" if rank == 0 else f"train.rank{rank}.log")
    with logs_to(log):
        acc = build_accelerator(cfg.train.mixed_precision, find_unused_parameters=has_idle_parameters(cfg.train))
        try:
            # Every rank reports every epoch: Ray Train needs the same number of reports from each worker.
            warmup = epoch_plan(cfg).warmup
            metrics = train(cfg, acc, on_epoch=lambda row: ray.train.report(numeric(row, warmup)))
            ray.train.report(final_report(metrics))
        finally:
            acc.end_training()  # without it ~50% of multi-process runs abort at exit (docs/distributed.md)
