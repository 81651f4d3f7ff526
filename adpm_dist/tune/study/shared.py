"""Shared training (docs/tune.md, "Shared training"): a study trains once what two candidates train alike.

A trial whose config, with its method's ``training_twin`` settings applied (methods/base.py: posthoc_la
-> its ``baseline.posthoc_base``; ADPM's ``model.prior_readout=posthoc_la`` -> ``raw``), has the same
result-changing settings (config.result_settings: every key but where it writes, logs and
checkpoints) as another trial of the study for the same (fold, seed, outer) is **derived** from it:
the source trial trains with ``train.keep_validated=true``, and the derived one is never sent to Ray.
Once its source has finished, the driver replays it (runtime/replay.py: the derived method's read-out
over each of the source's validated weights, chosen exactly as its own training would choose) into its
own trial directory: config.yaml, metrics.json, predictions.csv, best.pt, train.log, attempts.jsonl and
a cost.json with its own CPU time and ``replayed_from``. The consolidation reads it like any trial.

A trial that trains, whose first epochs (its method's ``shared_prefix``: a two-stage method's stage 1,
ADPM's prior warm-up) train exactly what another trial's do (the same result-changing settings once the
keys that act only after them are set alike, same method, same (fold, seed, outer)), **starts from** that
trial's prefix: the source trains with ``train.keep_prefix=true`` and the other one with
``train.prefix_from=<source dir>`` (runtime/prefix.py checks it). It still trains its remaining epochs on
Ray, so it goes in a second Ray pass, once its source has run (`run_then_replay`); a source that does not
run now and has no kept prefix leaves it to train from epoch 0.

`share_training` and `share_prefixes` are pure planning (they import the methods, never Ray); `split`,
`prefix_passes` and `replay_derived` are the driver's side, and tune/release.py deletes what nothing needs any
more.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from ...config import result_settings
from ..contract import apply_settings, trial_dir, trial_dir_of
from ..release import release


def training_key(position: tuple, cfg) -> tuple:
    """What makes two runs train the same weights: their CV position and every result-changing setting."""
    return *position, json.dumps(result_settings(cfg), sort_keys=True, default=str)


def twin_sources(runs: list[tuple[str, tuple, object]]) -> dict[str, str]:
    """{id: source id} for each (id, CV position, config) of ``runs`` whose training twin (Method.training_twin)
    trains exactly what another run of the list trains at the same position; that other run is its source.
    Sources are runs without a twin; train.select=refit trains again after selection, so it is never replayed."""
    from ...methods import method_for  # imports torch: the methods' own rule

    sources: dict[tuple, str] = {}
    twins: dict[str, tuple] = {}
    for run_id, position, cfg in runs:
        twin = method_for(cfg).training_twin() if cfg.train.select != "refit" else None
        if twin is None:
            sources.setdefault(training_key(position, cfg), run_id)
        else:
            twins[run_id] = training_key(position, apply_settings(cfg, twin, f"training twin of {run_id}"))
    return {run_id: sources[key] for run_id, key in twins.items() if key in sources}


def share_training(study, trials: list) -> list:
    """``trials`` with ``derived_from`` set where another trial trains exactly the same weights (twin_sources)."""
    sources = twin_sources([(t.id, (t.fold, t.seed, t.outer), study.config_of(t)) for t in trials])
    return [dataclasses.replace(t, derived_from=sources[t.id]) if t.id in sources else t for t in trials]


def share_prefixes(study, trials: list) -> list:
    """``trials`` with ``prefix_from`` set on each trial that trains and whose shared prefix (Method.shared_prefix)
    equals that of another trial of the list for the same (fold, seed, outer): the source is the first trial
    whose whole training is that prefix (``source_only``: CE for cRT and LWS), else the first of the list. A
    replayed trial trains nothing; refit trains its selection pass and its refit differently."""
    keyed = [(t, prefix_key(study, t)) for t in trials]
    sources: dict[tuple, str] = {}
    for only in (True, False):  # whole-training prefixes first: they never start from another run's
        for t, (key, source_only) in keyed:
            if key is not None and source_only == only:
                sources.setdefault(key, t.id)
    return [t if key is None or source_only or sources[key] == t.id else dataclasses.replace(t, prefix_from=sources[key])
            for t, (key, source_only) in keyed]


def prefix_key(study, t) -> tuple[tuple | None, bool]:
    """(what a trial's shared prefix trains: its CV position, length and settings, or None; whether it is the
    trial's whole training)."""
    from ...methods import method_for  # imports torch: the methods' own rule

    cfg = study.config_of(t)
    prefix = method_for(cfg).shared_prefix() if not t.derived_from and cfg.train.select != "refit" else None
    if prefix is None:
        return None, False
    settings = apply_settings(cfg, prefix.settings, f"shared prefix of {t.id}")
    return (*training_key((t.fold, t.seed, t.outer), settings), prefix.epochs), prefix.source_only


def prefix_settings(study, trial) -> dict:
    """What a trial's config gets for shared prefixes: keep one (a source), or start from one."""
    kept = {"train.keep_prefix": True} if trial.id in study.prefix_sources else {}
    start = {"train.prefix_from": str(trial_dir_of(study.out, trial.prefix_from))} if trial.prefix_from else {}
    return kept | start


def has_prefix(out: Path, source_id: str) -> bool:
    """Whether the source trial has kept its prefix (it reached the end of it with train.keep_prefix=true)."""
    from ...runtime.checkpoint import complete_checkpoints
    from ...runtime.prefix import prefix_root

    return bool(complete_checkpoints(prefix_root(trial_dir_of(out, source_id) / "checkpoints")))


def prefix_passes(study, trials: list) -> tuple[list, list]:
    """(first Ray pass, second): a trial that starts from a prefix its source trains in the first pass waits
    for the second; one whose source neither trains now nor has kept its prefix trains from epoch 0."""
    now = {t.id for t in trials}
    first, second = [], []
    for t in trials:
        if t.prefix_from and t.prefix_from in now:
            second.append(t)
        elif t.prefix_from and not has_prefix(study.out, t.prefix_from):
            first.append(dataclasses.replace(t, prefix_from=None))
        else:
            first.append(t)
    return first, second


def epochs_to_train(study, t) -> int:
    """The epochs a trial trains: its method's epoch plan, less the shared prefix it starts from."""
    from ...methods import method_for  # imports torch: the methods' own rule
    from ..search import epochs_per_trial

    cfg = study.config_of(t)
    prefix = method_for(cfg).shared_prefix() if t.prefix_from else None
    return epochs_per_trial(cfg) - (prefix.epochs if prefix else 0)


def longest_first(study, trials: list) -> list:
    """A pass's trials, the most epochs to train first (ties in plan order): Ray starts them in this order, so
    a pass does not end on one long trial while the other cores idle (longest-processing-time-first; epochs
    stand in for time, which also differs per epoch between methods)."""
    return sorted(trials, key=lambda t: -epochs_to_train(study, t))


def replayable(out: Path, source_id: str) -> bool:
    """Whether the source trial has finished with its validated weights kept."""
    return has_validated(trial_dir_of(out, source_id))


def has_validated(run_dir: Path) -> bool:
    """Whether a run has finished with its validated weights kept (train.keep_validated)."""
    return (run_dir / "metrics.json").is_file() and any((run_dir / "checkpoints" / "validated").glob("epoch_*.pt"))


def split(study, trials: list) -> tuple[list, list]:
    """(to train on Ray, to replay after them): a derived trial is replayed when its source has finished or
    trains now; one whose source does neither (cut by --max-trials, raced out, or finished before its
    weights were kept) trains itself."""
    training = {t.id for t in trials if not t.derived_from}
    replays = [t for t in trials if t.derived_from and (t.derived_from in training
                                                        or replayable(study.out, t.derived_from))]
    replay_ids = {t.id for t in replays}
    return [t for t in trials if t.id not in replay_ids], replays


def run_then_replay(study, trials: list, run_trained, threads: int = 1, say=print,
                    keep_checkpoints: bool = True) -> dict[str, str]:
    """Run ``trials``: the ones that train through ``run_trained()`` (which runs ``study.todo``: Ray), then
    the derived ones replayed here; the replays' statuses. Then what nothing needs any more is deleted
    (tune/release.py; a finished trial's resume checkpoints too unless ``keep_checkpoints``)."""
    trained, replays = split(study, trials)
    first, second = prefix_passes(study, trained)
    study.todo = longest_first(study, first)
    run_trained()
    if second:  # their sources have run: each starts from its source's kept prefix, or from epoch 0 without one
        study.todo = longest_first(study, prefix_passes(study, second)[0])
        say(f"shared training: {len(second)} trial(s) start from their source's kept prefix (a second Ray pass)")
        run_trained()
    status = replay_derived(study, replays, threads, say)
    release(study, trials, keep_checkpoints=keep_checkpoints, say=say)
    return status


@dataclass(frozen=True)
class Replay:
    """One derived run to replay: its id, config and run directory, and its source's run directory."""
    id: str
    cfg: object
    out: Path
    source: Path


def replay_derived(study, trials: list, threads: int = 1, say=print) -> dict[str, str]:
    """Replay each derived trial of ``trials`` whose source has finished (replay_runs); {trial id: status}."""
    status, jobs = {}, []
    for t in trials:
        if not t.derived_from or not replayable(study.out, t.derived_from):
            status[t.id] = "source not finished"
            say(f"shared training: {t.id} not replayed: its source {t.derived_from} has not finished")
        else:
            jobs.append(Replay(t.id, study.config_of(t), trial_dir(study.out, t), trial_dir_of(study.out, t.derived_from)))
    return status | replay_runs(jobs, threads, say)


def replay_runs(jobs: list[Replay], threads: int = 1, say=print) -> dict[str, str]:
    """Replay each job in this process with ``threads`` torch threads (what Ray gives a trial of
    --cpus-per-trial); {id: status}. Each run directory gets train.log, attempts.jsonl and a cost.json with its
    own CPU time and ``replayed_from``. A failed replay leaves its run without metrics.json (a partial study:
    --resume tries again)."""
    import signal

    import torch

    from ..cost import COST_FILE, CpuClock
    from ..interrupt import Interrupted
    from ..trainable import add_cost, logs_to, record_attempt
    from ...files import atomic_write_json
    from ...runtime.replay import replay

    status: dict[str, str] = {}
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        for job in jobs:
            attempt = record_attempt(job.out, job.id)
            wall, clock = time.monotonic(), CpuClock(live_children=False)   # this driver's descendants are Ray's
            try:
                with logs_to(job.out / "train.log"):
                    print(f"== {job.id}: attempt {attempt}, replayed over {job.source}", flush=True)
                    replay(job.cfg, job.source)
                status[job.id] = "replayed"
            except KeyboardInterrupt:  # Ctrl-C while replaying: the study's own exit (130, the --resume line)
                raise Interrupted(signal.SIGINT) from None
            except Exception as e:  # noqa: BLE001 - named below; the run stays unfinished
                status[job.id] = f"failed: {e}"
                say(f"shared training: replaying {job.id} failed ({e}); see {job.out / 'train.log'}")
            finally:
                cost = add_cost(job.out, time.monotonic() - wall, {"workers": 1, "cpus": threads, "gpus": 0},
                                clock.seconds())
                atomic_write_json(job.out / COST_FILE, cost | {"replayed_from": job.source.name})
    finally:
        torch.set_num_threads(before)
    if jobs:
        done = sum(status.get(j.id) == "replayed" for j in jobs)
        say(f"shared training: {done} of {len(jobs)} derived run(s) replayed over their source's weights")
    return status
