"""Run a planned search on Ray Tune: connect (or start a loopback cluster), run the trials, consolidate.

Local clusters bind to 127.0.0.1 only (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: with 1, gcs_server, raylet,
the agents and the workers listen on every interface) and may over-declare logical CPUs so that
`max_concurrent` trials fit on a small machine. After start-up every listening socket of the new
cluster's processes is checked: one on another address stops the search before any trial runs. With an address
(``--address auto``, ``ray://...``) or inside ``ray job submit`` (RAY_ADDRESS is set) the search joins
that cluster instead; its resources are the cluster's business then.
"""
from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import to_dict
from .contract import Experiment
from .experiment import write_search
from .price_book import keep_prices

DRIVER_CPU = 0.1  # a multi-worker trial only waits on its TorchTrainer; {"cpu": 0} is rejected by Tune


@dataclass
class Resources:
    cpus_per_trial: float = 1.0     # per training process (per worker when workers_per_trial > 1)
    gpus_per_trial: float = 0.0     # per training process; whole GPUs when workers_per_trial > 1
    workers_per_trial: int = 1      # > 1: a Ray Train TorchTrainer with that many Accelerate processes
    max_concurrent: int | None = None
    max_failures: int = 2           # retries of a failed trial (Tune FailureConfig)

    def check(self) -> None:
        if self.workers_per_trial < 1:
            raise ValueError(f"--workers-per-trial must be >= 1, got {self.workers_per_trial}")
        if self.cpus_per_trial <= 0:
            raise ValueError(f"--cpus-per-trial must be > 0, got {self.cpus_per_trial}")
        if self.gpus_per_trial < 0:
            raise ValueError(f"--gpus-per-trial must be >= 0, got {self.gpus_per_trial}")
        if self.workers_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise ValueError(f"--gpus-per-trial {self.gpus_per_trial}: multi-worker trials need whole GPUs per "
                             f"worker (DDP cannot share a GPU between ranks)")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError(f"--max-concurrent must be >= 1, got {self.max_concurrent}")
        if self.max_failures < 0:
            raise ValueError(f"--max-failures must be >= 0, got {self.max_failures}")

    @property
    def cpus_per_running_trial(self) -> float:
        if self.workers_per_trial == 1:
            return self.cpus_per_trial
        return self.workers_per_trial * self.cpus_per_trial + DRIVER_CPU

    def trial_bundle(self) -> dict:
        """What the Tune trial itself holds (Train workers of a multi-worker trial are placed separately)."""
        if self.workers_per_trial > 1:
            return {"cpu": DRIVER_CPU}
        return {"cpu": self.cpus_per_trial} | ({"gpu": self.gpus_per_trial} if self.gpus_per_trial else {})

    def as_dict(self, train_storage: Path) -> dict:
        return {"workers": self.workers_per_trial, "cpus": self.cpus_per_trial, "gpus": self.gpus_per_trial,
                "train_storage": str(train_storage)}


def resources_and_shards(args, output: Path, base) -> tuple[Resources, Path | str, int]:
    """What both search modes (grid, --fit) take from the CLI: the checked trial resources, and the shard
    location with its fold count (prepared under ``output`` if needed), enough shards for every loader."""
    from .shards import resolve_shards

    resources = Resources(args.cpus_per_trial, args.gpus_per_trial, args.workers_per_trial,
                          args.max_concurrent, args.max_failures)
    resources.check()
    shards, folds = resolve_shards(args.dataset, args.shards, output, args.folds, args.root,
                                   min_shards=args.workers_per_trial)  # loader workers adapt (feed.workers_for)
    return resources, shards, folds


@dataclass
class ClusterOptions:
    address: str | None = None      # None: RAY_ADDRESS if set (ray job submit), else start a local cluster
    num_cpus: float | None = None   # local cluster: logical CPUs (default: enough for max_concurrent trials)
    temp_dir: str | None = None     # local cluster: Ray's session/log directory (default /tmp/ray)
    dashboard: bool = False         # local cluster: start the dashboard (on 127.0.0.1)
    dashboard_port: int = 8265


def cluster_from_args(args) -> ClusterOptions:
    """--address, --num-cpus, --ray-temp-dir, --dashboard, --dashboard-port (cli/common.add_runner_arguments)."""
    return ClusterOptions(address=args.address, num_cpus=args.num_cpus, temp_dir=args.ray_temp_dir,
                          dashboard=args.dashboard, dashboard_port=args.dashboard_port)


@dataclass
class EarlyStopping:
    grace_period: int               # joint epochs (after any prior warm-up) before ASHA may stop a trial
    reduction_factor: float = 3.0
    scope: str = "fold"             # scheduler.SCOPES: compare all candidates of a fold, or one candidate's points


def connect(cluster: ClusterOptions, resources: Resources, n_trials: int) -> bool:
    """ray.init for this search; True if we started a local cluster (and so must shut it down)."""
    address = cluster.address or os.environ.get("RAY_ADDRESS")
    if address:
        local_only = [n for n, v in (("--num-cpus", cluster.num_cpus), ("--ray-temp-dir", cluster.temp_dir),
                                     ("--dashboard", cluster.dashboard)) if v]
        if local_only:
            raise ValueError(f"{', '.join(local_only)} only apply to a local cluster, not to --address {address}")
        import ray

        ray.init(address=address, log_to_driver=False)
        return False
    # Loopback only: with this variable unset or 1, Ray binds and advertises every interface (measured with
    # Ray 2.60: gcs_server and raylet on ::, agents on the external address). Forced, not defaulted: a
    # value left in the environment must not open the cluster. Read when ray is imported, so set first;
    # the cluster's processes inherit it.
    if "ray" in sys.modules and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
        raise RuntimeError("ray was imported before the search could set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0; "
                           "a local cluster started now would listen on every interface")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    per_trial = resources.cpus_per_running_trial
    machine = os.cpu_count() or 1
    concurrent = resources.max_concurrent or max(1, int(machine // per_trial))
    num_cpus = cluster.num_cpus or max(machine, math.ceil(min(concurrent, n_trials) * per_trial))
    ray.init(num_cpus=num_cpus, include_dashboard=cluster.dashboard, dashboard_host="127.0.0.1",
             dashboard_port=cluster.dashboard_port, _temp_dir=cluster.temp_dir, log_to_driver=False)
    exposed = exposed_listeners(cluster_processes())
    if exposed:
        ray.shutdown()
        raise RuntimeError(f"the local Ray cluster listens beyond loopback: {exposed}; stopped it")
    return True


def cluster_processes() -> list[int]:
    """The processes of a cluster this driver started: gcs_server, raylet, agents and workers descend from it."""
    import psutil

    return [p.pid for p in psutil.Process().children(recursive=True)]


def listening_sockets(pids: list[int]) -> list[tuple[int, str, str, int]]:
    """(pid, process name, address, port) of every listening TCP socket and bound UDP socket of `pids`."""
    import psutil

    found = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            name = proc.name()
            for c in proc.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN or (c.type == socket.SOCK_DGRAM and c.laddr and not c.raddr):
                    found.append((pid, name, c.laddr.ip, c.laddr.port))
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue  # ended meanwhile (a worker that exited) or not ours to inspect
    return found


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, and IPv4-mapped 127.x (::ffff:127.0.0.1, how dual-stack sockets report it)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def exposed_listeners(pids: list[int]) -> list[str]:
    """'name pid address:port' of every socket of `pids` that listens beyond loopback (0.0.0.0 and :: included)."""
    return [f"{name} {pid} {ip}:{port}" for pid, name, ip, port in listening_sockets(pids) if not is_loopback(ip)]


def run_search(search: Experiment, resources: Resources, cluster: ClusterOptions,
               early_stopping: EarlyStopping | None = None, progress_interval: float = 15.0,
               stream=None, *, connected: bool = False) -> dict:
    """Run every trial in `search.todo` on Ray Tune and return {trial id: status}.

    The caller consolidates afterwards (also when some trials failed: the summary says which).
    `connected`: the caller holds the cluster (`ray_cluster`), e.g. for the two phases of --fit.
    """
    resources.check()
    stream = stream or sys.stdout
    write_search(search)
    if not search.todo:
        print("every trial already has results; nothing to run", file=stream, flush=True)
        return {}
    if connected:
        statuses = _fit(search, resources, early_stopping, progress_interval, stream)
    else:
        with ray_cluster(cluster, resources, len(search.todo)):
            statuses = _fit(search, resources, early_stopping, progress_interval, stream)
    keep_prices(search, resources, stream)  # price_book.py: a later experiment of this config is priced from them
    return statuses



@contextlib.contextmanager
def ray_cluster(cluster: ClusterOptions, resources: Resources, n_trials: int):
    """Connected to (or running a local) Ray cluster for the duration of the block."""
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # snapshot spam
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # its reporter prints boxes even at verbose=0
    started = connect(cluster, resources, n_trials)
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()  # stops exactly the processes ray.init started (never `ray stop`)


def _fit(search: Experiment, resources: Resources, early_stopping: EarlyStopping | None,
         progress_interval: float, stream) -> dict:
    from ray import tune

    logging.getLogger("ray.tune").setLevel(logging.WARNING)  # the progress table replaces Tune's INFO lines
    from .interrupt import graceful_stop
    from .progress import ProgressTable
    from .scheduler import PerFoldASHA, mark_early_stop
    from .trainable import run_trial

    out = search.out
    trials = trial_payloads(search)
    progress = ProgressTable(trials, search.total_epochs, interval=progress_interval, stream=stream,
                             show_eval=search.show_eval,  # a batch may hide it
                             epochs={t.id: epochs_per_trial(search.config_of(t)) for t in search.todo})
    scheduler = None
    if early_stopping is not None:
        max_t = max((joint_epochs_per_trial(search.config_of(t)) for t in search.todo), default=1)
        scheduler = PerFoldASHA(max_t=max_t, grace_period=early_stopping.grace_period,
                                reduction_factor=early_stopping.reduction_factor, on_stop=mark_early_stop,
                                scope=early_stopping.scope)
    tuner = tune.Tuner(
        tune.with_resources(run_trial, resources.trial_bundle()),
        param_space={"trial": tune.grid_search(trials),
                     "resources": resources.as_dict(out / "ray_train")},
        tune_config=tune.TuneConfig(max_concurrent_trials=resources.max_concurrent, scheduler=scheduler,
                                    reuse_actors=True,  # later trials skip the ~10-30 s torch/timm import
                                    trial_dirname_creator=lambda t: t.config["trial"]["id"]),
        run_config=tune.RunConfig(
            name=f"search-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",  # unique: a reused name silently resumes
            storage_path=str(out / "ray_results"), verbose=0, callbacks=[progress],
            failure_config=tune.FailureConfig(max_failures=resources.max_failures)),
    )
    print(f"running {len(trials)} of {len(search.trials)} trials | "
          f"{_describe(resources)} | logs: {search.logs}",
          file=stream, flush=True)
    with graceful_stop(on_stop=progress.stop):  # Ctrl-C / SIGTERM: interrupt.Interrupted after Tune's loop ends
        grid = tuner.fit()
    statuses = {}
    for result in grid:
        if not result.config:  # a trial Tune never started
            continue
        trial_id = result.config["trial"]["id"]
        statuses[trial_id] = "failed" if result.error else progress.states[trial_id].status
    return statuses


def joint_epochs_per_trial(cfg) -> int:
    """Epochs that train the whole model (ASHA's time axis and max_t): the plan less its prior-only warm-up."""
    from .trainable import epoch_plan

    plan = epoch_plan(cfg)
    return plan.total - plan.warmup


def epochs_per_trial(cfg) -> int:
    """Epochs a trial reports (the progress table's N): the method's own epoch plan, so a classifier
    baseline (no prior warm-up) is not counted as ADPM."""
    from .trainable import epoch_plan

    return epoch_plan(cfg).total


def trial_payloads(search: Experiment) -> list[dict]:
    """What each Tune trial receives: its contract.TrialRecord, the typed settings it applies and its whole
    resolved config as plain values (trainable.trial_config_of rebuilds it; no text is re-parsed)."""
    return [t.record().to_dict() | {"settings": search.settings_of(t),
                                    "config": to_dict(search.config_of(t))} for t in search.todo]


def _describe(r: Resources) -> str:
    gpus = f", {r.gpus_per_trial:g} GPU" if r.gpus_per_trial else ""
    who = f"{r.workers_per_trial} workers x {r.cpus_per_trial:g} CPU{gpus}" if r.workers_per_trial > 1 \
        else f"{r.cpus_per_trial:g} CPU{gpus}"
    return f"per trial: {who} | max concurrent: {r.max_concurrent or 'as resources allow'} | retries: {r.max_failures}"


__all__ = ["Resources", "resources_and_shards", "ClusterOptions", "EarlyStopping", "connect", "ray_cluster", "run_search", "trial_payloads"]
