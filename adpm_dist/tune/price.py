"""The price of an experiment before it runs (`--dry-run`, and the first lines of every run).

Per candidate (a trial record's `candidate`, else its `group`): the trials, the epochs each trains (the
method's epoch plan), and the cost of one epoch as recorded by earlier trials of the same candidate in
this experiment directory (cost.json: wall and CPU seconds over the attempts; metrics.json: the epochs
trained). From those: CPU-hours, GPU-hours and the wall time at the trials the cluster runs at once.
A candidate without a recorded trial is priced "?" (docs/tune.md, "The price before it runs"). A study's
derived trials (study/shared.py: read out over another trial's training) are listed apart and cost nothing;
its trials that start from another trial's kept prefix are a row of their own, with the epochs after it.

`estimate` is pure; `recorded_epoch_cost` and `plan_rows` read files and configs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .contract import candidate_of, trial_dir
from .cost import EpochCost, recorded_epoch_cost, trial_hours


@dataclass(frozen=True)
class Row:
    name: str
    trials: int
    epochs: int            # per trial
    cost: EpochCost | None
    from_prefix: bool = False  # trials that start from another trial's kept prefix (study/shared.py): fewer epochs


def mean_cost(costs: list[EpochCost]) -> EpochCost | None:
    if not costs:
        return None
    cpus = [c.cpu_s for c in costs if c.cpu_s is not None]
    return EpochCost(sum(c.wall_s for c in costs) / len(costs), sum(cpus) / len(cpus) if cpus else None, len(costs))


def plan_rows(experiment, resources=None) -> list[Row]:
    """Every candidate of `experiment` (a contract.Experiment) with its trials still to run, their epochs
    and the epoch cost its finished trials recorded, else the price book's record of the same config on
    `resources` (price_book.py), else its calibration."""
    from .calibrate import calibrated_epoch_cost
    from .price_book import lookup, price_key
    from ..methods import method_for
    from .trainable import epoch_plan  # imports torch (the methods' epoch plans)

    todo: dict[str, list] = {}
    for t in experiment.todo:
        if not t.record().derived_from:  # replayed over its source's weights: no training (study/shared.py)
            todo.setdefault(candidate_of(t), []).append(t)
    recorded: dict[str, list[EpochCost]] = {}
    for t in experiment.trials:
        if t.record().derived_from:  # a replay's cost is no epoch of training
            continue
        c = recorded_epoch_cost(trial_dir(experiment.out, t))
        if c is not None:
            recorded.setdefault(candidate_of(t), []).append(c)
    rows = []
    for name, ts in todo.items():
        plan = epoch_plan(experiment.config_of(ts[0]))
        cost = mean_cost(recorded.get(name, []))
        if cost is None and resources is not None:
            cost = lookup(price_key(experiment.config_of(ts[0]), resources), experiment.out)
        if cost is None:  # runs 0: from --calibrate's short run
            cost = calibrated_epoch_cost(experiment.out, name, plan, validations_of(experiment.config_of(ts[0]), plan))
        started = [t for t in ts if experiment.config_of(t).train.prefix_from]  # from a shared prefix
        if len(started) < len(ts):
            rows.append(Row(name, len(ts) - len(started), plan.total, cost))
        if started:
            prefix = method_for(experiment.config_of(started[0])).shared_prefix()
            rows.append(Row(name, len(started), plan.total - prefix.epochs, cost, from_prefix=True))
    return rows


def validations_of(cfg, plan) -> int:
    """How many validations a trial of ``cfg`` runs over its epoch plan (0 without validation data)."""
    if cfg.data.val_part == "none":
        return 0
    return sum(plan.validates(e, cfg.train.val_every) for e in range(plan.total))


def replayed_counts(experiment) -> dict[str, int]:
    """Per candidate, its trials still to run that are read out over another trial's training (~0 training)."""
    counts: dict[str, int] = {}
    for t in experiment.todo:
        if t.record().derived_from:
            counts[candidate_of(t)] = counts.get(candidate_of(t), 0) + 1
    return counts


def estimate(rows: list[Row], cpus_per_trial: float, gpus_per_trial: float, at_once: int) -> dict:
    """Hours for `rows` on trials of `cpus_per_trial` CPUs (and GPUs), `at_once` trials at a time. Priced
    rows only; `unpriced` names the rest. CPU-hours: the recorded CPU time where there is one, else the
    wall time x the CPUs held (cost.trial_hours' rule)."""
    cpu_h = gpu_h = trial_s = 0.0
    unpriced = []
    for r in rows:
        if r.cost is None:
            unpriced += [] if r.name in unpriced else [r.name]
            continue
        seconds = r.trials * r.epochs * r.cost.wall_s
        hours = trial_hours({"wall_s": seconds, "cpus": cpus_per_trial, "gpus": gpus_per_trial}
                            | ({} if r.cost.cpu_s is None else {"cpu_s": r.trials * r.epochs * r.cost.cpu_s}))
        cpu_h, gpu_h, trial_s = cpu_h + hours["cpu_hours"], gpu_h + hours["gpu_hours"], trial_s + seconds
    return {"trials": sum(r.trials for r in rows), "epochs": sum(r.trials * r.epochs for r in rows),
            "cpu_hours": cpu_h, "gpu_hours": gpu_h, "wall_hours": trial_s / max(1, at_once) / 3600,
            "at_once": at_once, "unpriced": unpriced}


def price_lines(rows: list[Row], total: dict, replayed: dict[str, int] | None = None) -> list[str]:
    names = [f"{r.name} (from prefix)" if r.from_prefix else r.name for r in rows]
    width = max([28, *(len(n) + 2 for n in names)])  # the columns stay aligned for any candidate name
    lines = ["price before it runs (per-epoch cost recorded by this experiment's finished trials, the price book, or calibrated):",
             f"  {'candidate':<{width}}{'trials':>7}{'epochs':>8}{'s/epoch':>9}{'CPU-h':>9}  from"]
    for r, name in zip(rows, names):
        per = "?" if r.cost is None else f"{r.cost.wall_s:.2f}"
        cpu = "?" if r.cost is None else f"{r.trials * r.epochs * (r.cost.cpu_s or r.cost.wall_s) / 3600:.3f}"
        source = ("-" if r.cost is None else f"{r.cost.origin}: {r.cost.runs} trial(s)" if r.cost.origin
                  else f"{r.cost.runs} trial(s)" if r.cost.runs else "--calibrate")
        lines.append(f"  {name:<{width}}{r.trials:>7}{r.epochs:>8}{per:>9}{cpu:>9}  {source}")
    lines.append(f"  total: {total['trials']} trials, {total['epochs']} epochs; {total['cpu_hours']:.3f} CPU-hours, "
                 f"{total['gpu_hours']:.3f} GPU-hours, ~{total['wall_hours']:.2f} h wall at {total['at_once']} "
                 f"trial(s) at once")
    if replayed:
        lines.append("  shared training (replayed over a twin's validated weights, no training of their own): "
                     + ", ".join(f"{name} {n} trial(s)" for name, n in replayed.items()))
    if total["unpriced"]:
        lines.append(f"  not priced (no finished trial recorded yet, so more than the total above; --calibrate "
                     f"measures them): {', '.join(total['unpriced'])}")
    return lines


def at_once(resources, machine_cpus: int) -> int:
    """The trials that run at once: --max-concurrent, else as many as the CPUs hold."""
    return resources.max_concurrent or max(1, math.floor(machine_cpus / resources.cpus_per_running_trial))


def price(experiment, resources, stream, calibrate: bool = False) -> tuple[list[Row], dict]:
    """The rows and estimate of `experiment` on `resources`, after calibrating the candidates without a
    record when `calibrate` (its progress on `stream`)."""
    rows = plan_rows(experiment, resources)
    if calibrate and (unpriced := list(dict.fromkeys(r.name for r in rows if r.cost is None))):
        from .calibrate import calibrate as measure

        measure(experiment, unpriced, stream, threads=max(1, int(resources.cpus_per_trial)))
        rows = plan_rows(experiment, resources)
    return rows, estimate(rows, *trial_resources(resources))


def trial_resources(resources) -> tuple[float, float, int]:
    """(CPUs held per running trial, GPUs per trial, trials at once) on this machine."""
    import os

    return (resources.cpus_per_running_trial, resources.gpus_per_trial * resources.workers_per_trial,
            at_once(resources, os.cpu_count() or 1))


def show_price(experiment, resources, stream, calibrate: bool = False,
               race_waves: tuple[int, int] | None = None) -> dict:
    """Print the price of `experiment` on `resources` (see `price`); the estimate (for tests and the caller).
    ``race_waves``: (folds, seeds) of a --race study, whose price is a range (race_line)."""
    rows, total = price(experiment, resources, stream, calibrate)
    lines = price_lines(rows, total, replayed_counts(experiment))
    if race_waves:
        lines.append(race_line(rows, total, *race_waves, held=trial_resources(resources)))
    print("\n".join(lines), file=stream, flush=True)
    return total


def race_line(rows: list[Row], total: dict, folds: int, seeds: int = 1, *, held: tuple[float, float, int]) -> str:
    """What --race can save: the total is its price when nothing is raced out; the least it can cost is every
    trial of the waves before the first look (the first seed's first folds), then the cheapest candidate
    alone (study/race.py race_floor). ``held``: trial_resources."""
    from .study.race import race_floor

    if any(r.cost is None for r in rows):  # a floor of the priced candidates alone would read as the study's
        return (f"  with --race: between the first {first_waves(folds, seeds)} of every candidate and the total "
                "above; not priced until every candidate is (--calibrate)")
    unit = "gpu" if total["gpu_hours"] > 0 else "cpu"
    names = dict.fromkeys(r.name for r in rows)
    floor = race_floor({n: estimate([r for r in rows if r.name == n], *held)[f"{unit}_hours"] for n in names}, folds, seeds)
    unit = unit.upper()
    return (f"  with --race: between {floor:.3f} {unit}-hours (every candidate but the cheapest raced out at the "
            f"first look, after {first_waves(folds, seeds)}) and the total above (nothing raced out)")


def first_waves(folds: int, seeds: int) -> str:
    """The waves every candidate runs before a race's first look, in words."""
    from .study.race import MIN_WAVES

    of_seed = f" of the first of {seeds} seeds" if seeds > 1 else ""
    return f"{MIN_WAVES} of {folds} folds{of_seed}"
