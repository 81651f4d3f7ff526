"""The price book: what an epoch of a training config cost in earlier experiments on this machine.

A study's price needs each candidate's cost per epoch. Its own finished trials are the best record
(price.plan_rows), then a record of the *same config* from an earlier experiment, kept here, then
`--calibrate`'s short run. After every Ray run, each trial it finished adds one line to the book
(`~/.cache/adpm-dist/price_book.jsonl`, or `$ADPM_PRICE_BOOK`): its key, its wall and CPU seconds per
epoch, and its directory. The key is the trial's result-changing config without what differs between
the trials of one candidate (the folds it trains on and is scored on, its seed; the number of folds
stays), plus the shards it read and the resources it ran on: another machine, another data set or
another `--cpus-per-trial` is another price. A trial that started from a shared prefix is not
recorded (its history holds epochs it did not train), nor is a replay.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

BOOK_ENV = "ADPM_PRICE_BOOK"
PER_TRIAL_KEYS = ("data.train_parts", "data.eval_part", "run.seed")  # what differs within one candidate
RECENT = 20  # the last entries of a key that a price averages


def book_path() -> Path:
    return Path(os.environ.get(BOOK_ENV) or Path.home() / ".cache" / "adpm-dist" / "price_book.jsonl")


def price_key(cfg, resources) -> str:
    """The config and the conditions an epoch's cost depends on (see the module docstring)."""
    from ..config import result_settings

    settings = {k: v for k, v in result_settings(cfg).items() if k not in PER_TRIAL_KEYS}
    where = {"shards": str(Path(cfg.data.shards).resolve()),
             "folds_trained": len(cfg.data.train_parts), "cpus": resources.cpus_per_trial,
             "gpus": resources.gpus_per_trial, "workers": resources.workers_per_trial}
    text = json.dumps([settings, where], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def read_book(path: Path | None = None) -> list[dict]:
    """Every entry; a line that is not JSON (a write cut short) is skipped, never fatal."""
    path = path or book_path()
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def record(experiment, trials, resources, path: Path | None = None) -> int:
    """Add the finished ``trials`` of ``experiment`` to the book (those not in it yet); how many were added."""
    from .contract import trial_dir
    from .cost import recorded_epoch_cost

    path = path or book_path()
    known = {e.get("trial") for e in read_book(path)}
    lines = []
    for t in trials:
        cfg = experiment.config_of(t)
        run_dir = trial_dir(experiment.out, t)
        if t.record().derived_from or cfg.train.prefix_from or str(run_dir) in known:
            continue
        cost = recorded_epoch_cost(run_dir)
        if cost is not None:
            lines.append(json.dumps({"key": price_key(cfg, resources), "wall_s": cost.wall_s, "cpu_s": cost.cpu_s,
                                     "trial": str(run_dir), "when": time.strftime("%Y-%m-%d %H:%M:%S")}))
    if lines:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:  # one line per trial: a reader skips a line cut short
            f.write("\n".join(lines) + "\n")
    return len(lines)


def lookup(key: str, exclude: Path, path: Path | None = None):
    """price.EpochCost of ``key`` from its last RECENT entries outside ``exclude`` (this experiment, whose
    own records price.plan_rows reads directly), or None."""
    from .cost import EpochCost

    inside = str(Path(exclude).resolve()) + os.sep
    found = [e for e in read_book(path) if e.get("key") == key and not str(e.get("trial", "")).startswith(inside)]
    found = found[-RECENT:]
    if not found:
        return None
    cpus = [e["cpu_s"] for e in found if e.get("cpu_s") is not None]
    return EpochCost(sum(e["wall_s"] for e in found) / len(found), sum(cpus) / len(cpus) if cpus else None,
                     len(found), origin="price book")


def keep_prices(experiment, resources, stream) -> None:
    """``experiment``'s trials just run, into the book. A book that cannot be written costs a warning, never
    the experiment."""
    try:
        record(experiment, experiment.todo, resources)
    except OSError as e:
        print(f"warning: the price book {book_path()} could not be written ({e}); prices are not kept", file=stream)
