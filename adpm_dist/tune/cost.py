"""What a trial cost, measured as the work itself rather than as the machine's load.

A trial's cost.json (written by trainable.add_cost after every attempt) holds:

    wall_s      wall seconds over its attempts (information: it moves with other jobs on the machine)
    cpu_s       process CPU seconds (user + system) of the trial process and its children, over the attempts
    gpu_s       wall seconds x GPUs held (0 without a GPU)
    attempts, processes, cpus, gpus    what it held (cpus: logical CPUs reserved)

`trial_hours` turns one cost.json into hours for the leaderboard and the recommendation rule, and
`recorded_epoch_cost` a finished trial's into its cost per epoch (the price's record). `trial_hours` is
pure; cost.json files written before `cpu_s` existed fall back to wall time x CPUs reserved.
"""
from __future__ import annotations

import json
import resource
from dataclasses import dataclass
from pathlib import Path

COST_FILE = "cost.json"


def trial_hours(cost: dict) -> dict:
    """{cpu_hours, gpu_hours, wall_hours, cpu_source} of one cost.json.

    cpu_hours: cpu_s / 3600 when recorded ("cpu_time"), else wall_s x cpus / 3600 ("wall_x_cpus", the
    old rule, which counts the machine's load). gpu_hours: gpu_s, else wall_s x gpus. An empty cost
    (a trial that never ran) is 0 hours.
    """
    wall = float(cost.get("wall_s") or 0.0)
    if cost.get("cpu_s") is not None:
        cpu, source = float(cost["cpu_s"]), "cpu_time"
    else:
        cpu, source = wall * float(cost.get("cpus") or 1.0), "wall_x_cpus"
    gpu = float(cost["gpu_s"]) if cost.get("gpu_s") is not None else wall * float(cost.get("gpus") or 0.0)
    return {"cpu_hours": cpu / 3600, "gpu_hours": gpu / 3600, "wall_hours": wall / 3600, "cpu_source": source}


def own_seconds() -> float:
    """CPU seconds (user + system) used so far by this process (every thread) and its children that ended
    and were waited for (data-loader workers shut down)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def live_children_seconds() -> dict[int, float]:
    """{pid: CPU seconds so far} of this process's live descendants (data-loader workers kept alive)."""
    try:
        import psutil
    except ImportError:
        return {}
    found = {}
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            found[child.pid] = t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # ended meanwhile: counted by RUSAGE_CHILDREN once waited for
    return found


class CpuClock:
    """CPU seconds spent between start and `seconds()`: this process (all its threads, so a reused Ray actor
    counts only what ran since start), its children that ended and were waited for, and what each live
    descendant spent since start.

    A trial shares its process with nothing else (one Tune trial per actor at a time), so the process's
    CPU time between start and stop is the trial's. Each live descendant counts only its own growth: one
    that ends without being waited for (a Ray worker reaped by the raylet while the driver replays) takes
    its whole history out of the sum, which once made a replay's clock go below zero and read 0.
    ``live_children=False``: the driver's own work only (its descendants are the Ray cluster)."""
    def __init__(self, live_children: bool = True):
        self.live = live_children
        self.own, self.kids = self.now()

    def now(self) -> tuple[float, dict[int, float]]:
        return own_seconds(), (live_children_seconds() if self.live else {})

    def seconds(self) -> float:
        return self.since(*self.now())

    def since(self, own: float, kids: dict[int, float]) -> float:
        grown = sum(max(0.0, s - self.kids.get(pid, 0.0)) for pid, s in kids.items())
        return max(0.0, own - self.own + grown)

    def lap(self) -> float:
        """Seconds since the start or the last lap, which then starts again (one epoch's share)."""
        own, kids = self.now()
        spent = self.since(own, kids)
        self.own, self.kids = own, kids
        return spent


__all__ = ["COST_FILE", "trial_hours", "own_seconds", "live_children_seconds", "CpuClock"]


@dataclass(frozen=True)
class EpochCost:
    wall_s: float          # wall seconds of one epoch (evaluation and start-up spread over the epochs)
    cpu_s: float | None    # process CPU seconds of one epoch (None: recorded before CPU time was)
    runs: int              # trials it was measured on
    origin: str = ""       # where an earlier record came from ("price book": another experiment, price_book.py)


def recorded_epoch_cost(run_dir: Path) -> EpochCost | None:
    """One finished trial's cost per epoch, from its cost.json and metrics.json (None if either is missing)."""
    try:
        cost = json.loads((run_dir / COST_FILE).read_text())
        epochs = len(json.loads((run_dir / "metrics.json").read_text()).get("history") or [])
    except (OSError, ValueError):
        return None
    if epochs < 1 or not cost.get("wall_s") or cost.get("prefix_from"):  # its history has epochs it did not train
        return None
    cpu = cost.get("cpu_s")
    return EpochCost(cost["wall_s"] / epochs, None if cpu is None else cpu / epochs, 1)
