"""A study's trials read back: each candidate's selected points and its estimate, from the trials'
metrics.json and predictions.csv (written by engine.train; nothing is re-computed from images).

Selection (per candidate): the point with the best **pooled out-of-fold macro-F1** over the folds it is
selected on (the predictions of those folds' trials concatenated, then one macro-F1, averaged over
seeds; stats.pooled_scores), among points with every (fold, seed) evaluated; ties -> the earlier point
in the space. Held-out protocol: over the K CV folds (the pick is then optimistic for this estimate;
the recipe's run on `test` is the figure to publish). Nested: per outer fold k over the inner trials
on the other folds only; the selected point's CV trial on fold k is the outer score.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..cells import read_metrics, trial_status
from ..experiment import trial_dir
from ..protocol import NESTED
from ..cost import COST_FILE, trial_hours
from . import stats, target
from .plan import StudyTrial


@dataclass
class TrialResult:
    trial: StudyTrial
    status: str
    metrics: dict | None
    cost: dict

    def rows(self, out: Path) -> list[dict]:
        return read_predictions(trial_dir(out, self.trial) / "predictions.csv")

    def predictions(self, out: Path) -> tuple[list[str], list[str]]:
        rows = self.rows(out)
        return [r["label"] for r in rows], [r["prediction"] for r in rows]


def read_predictions(path: Path) -> list[dict]:
    """A run's predictions.csv rows (key, label, prediction); ValueError naming the file otherwise."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ValueError(f"{path}: cannot read the trial's predictions ({e.strerror or e})") from None
    if rows and not {"key", "label", "prediction"} <= set(rows[0]):
        raise ValueError(f"{path}: expected columns key, label, prediction; got {list(rows[0])}")
    return rows


@dataclass
class OOF:
    """A candidate's pooled out-of-fold predictions: image n (sorted by key) of class ``labels[n]`` was
    evaluated on fold ``folds[n]``; ``predictions[s, n]`` is what seed s's run trained without it said."""
    keys: list[str]
    labels: np.ndarray
    folds: np.ndarray
    predictions: np.ndarray


@dataclass
class Selection:
    point: str | None
    folds: list[int]                 # the evaluation folds it was selected on
    complete: bool                   # chosen among points with every (fold, seed) evaluated
    scores: dict[str, float] = field(default_factory=dict)   # point -> pooled macro-F1 (mean over seeds)
    unseen: list[str] = field(default_factory=list)          # classes no selection fold held


@dataclass
class Estimate:
    """One candidate: per (fold, seed) the metrics of the trial behind its outer score."""
    name: str
    selections: dict[int | None, Selection]     # outer fold (None: over every fold) -> choice
    components: dict[tuple[int, int], dict]     # (fold, seed) -> metrics.json
    expected: int                               # folds x seeds
    pooled_macro_f1: float
    cost: dict
    oof: OOF | None = None                      # complete estimates only: the target-prior figure's input
    recipe_runs: list[dict] = field(default_factory=list)  # metrics.json of the CV trials at the recipe's point

    @property
    def complete(self) -> bool:
        return len(self.components) == self.expected

    def values(self, key: str) -> dict[tuple[int, int], float]:
        return {k: m[key] for k, m in self.components.items()}

    def mean_std(self, key: str) -> tuple[float, float]:
        v = np.array(list(self.values(key).values()), dtype=float)
        return (float(v.mean()) if v.size else float("nan"), float(v.std(ddof=1)) if v.size > 1 else float("nan"))

    def groups_f1(self) -> dict[str, float]:
        per = [stats.group_f1(m["per_class"], stats.class_groups(m.get("train_counts") or
                                                                  {c: 1 for c in m["per_class"]}))
               for m in self.components.values()]
        return {g: float(np.nanmean([p[g] for p in per])) if per else float("nan") for g in ("head", "medium", "tail")}

    def unseen_by_fold(self) -> dict[int, list[str]]:
        return {k: [c for c, v in m["per_class"].items() if v["support"] == 0]
                for (k, _), m in sorted(self.components.items())}


def read_results(out: Path, search: dict) -> dict[str, TrialResult]:
    results = {}
    for t in search["trials"]:
        trial = StudyTrial(t["candidate"], t["point"], t["seed"], t["fold"], t["outer"])
        run_dir = trial_dir(out, trial)
        status = trial_status(run_dir)
        if status == "not run" and trial.id in search.get("skipped", []):
            status = "skipped (--max-trials)"
        cost = json.loads((run_dir / COST_FILE).read_text()) if (run_dir / COST_FILE).is_file() else {}
        results[trial.id] = TrialResult(trial, status, read_metrics(run_dir, status), cost)
    return results


def pooled(out: Path, runs: list[TrialResult], class_names: list[str]) -> tuple[float, list[str]]:
    """(pooled macro-F1 averaged over seeds, classes no run's evaluation part held)."""
    by_seed: dict[int, tuple[list, list]] = {}
    for r in runs:
        labels, preds = r.predictions(out)
        by_seed.setdefault(r.trial.seed, ([], []))
        by_seed[r.trial.seed][0].extend(labels)
        by_seed[r.trial.seed][1].extend(preds)
    if not by_seed:
        return float("nan"), list(class_names)
    scores = [stats.pooled_scores(y, p, class_names)["macro_f1"] for y, p in by_seed.values()]
    unseen = stats.unseen_classes([c for y, _ in by_seed.values() for c in y], class_names)
    return float(np.mean(scores)), unseen


def select(out: Path, results: dict[str, TrialResult], search: dict, candidate: dict, outer: int | None,
           class_names: list[str]) -> Selection:
    """The point of ``candidate`` for outer fold ``outer`` (nested: on its inner trials, every other fold), or
    over the CV trials (``outer`` None: the folds done, ``folds_done``, in a race's interim look)."""
    done = search["folds"] if outer is not None else search.get("folds_done", search["folds"])
    folds = [k for k in range(done) if k != outer]
    points = [p["label"] for p in candidate["points"]]
    if len(points) == 1:  # nothing to choose: no inner trials were planned
        return Selection(points[0], folds, True)
    scores, complete, unseen = {}, {}, {}
    for p in points:
        runs = [results[StudyTrial(candidate["name"], p, s, k, outer).id] for s in search["seeds"] for k in folds]
        done = [r for r in runs if r.status == "done"]
        if done:
            scores[p], unseen[p] = pooled(out, done, class_names)
            complete[p] = len(done) == len(runs)
    pool = [p for p in points if complete.get(p)] or list(scores)
    if not pool:
        return Selection(None, folds, False)
    best = max(pool, key=lambda p: (round(scores[p], 12), -points.index(p)))
    return Selection(best, folds, bool(complete.get(best)), scores, unseen[best])


def estimate(out: Path, results: dict[str, TrialResult], search: dict, candidate: dict,
             class_names: list[str]) -> Estimate:
    """``search["folds_done"]`` (a race's interim look, race.py): only the first outer folds count."""
    name, seeds = candidate["name"], search["seeds"]
    folds = search.get("folds_done", search["folds"])
    selections = {None: select(out, results, search, candidate, None, class_names)}
    if search["protocol"] == NESTED:
        selections |= {k: select(out, results, search, candidate, k, class_names) for k in range(folds)}
    components, behind = {}, []
    for k in range(folds):
        point = (selections[k] if search["protocol"] == NESTED else selections[None]).point
        for s in seeds:
            r = results.get(StudyTrial(name, point, s, k).id) if point else None
            if r is not None and r.status == "done":
                components[(k, s)] = r.metrics
                behind.append(r)
    score = pooled(out, behind, class_names)[0] if behind else float("nan")
    complete = len(components) == folds * len(seeds)
    oof = out_of_fold(out, behind, class_names, seeds) if complete else None
    point = selections[None].point
    recipe_runs = [r.metrics for s in seeds for k in range(folds)
                   if point and (r := results.get(StudyTrial(name, point, s, k).id)) and r.status == "done"]
    mine = [r for r in results.values() if r.trial.candidate == name and r.cost]
    hours = [trial_hours(r.cost) for r in mine]  # CPU time, not wall x CPUs: the work, not the machine's load
    cost = {"trials": len(mine)} | {k: sum(h[k] for h in hours) for k in ("cpu_hours", "gpu_hours", "wall_hours")}
    return Estimate(name, selections, components, folds * len(seeds), score, cost, oof, recipe_runs)


def read_estimates(out: Path, search: dict) -> tuple[dict[str, TrialResult], list[str], list[Estimate]]:
    """(every trial read back, the class names, an estimate per candidate of ``search``): what the answer,
    a race's interim look and the learning curve all start from."""
    results = read_results(out, search)
    names = class_names_of(results)
    return results, names, [estimate(out, results, search, c, names) for c in search["candidates"]]


def out_of_fold(out: Path, runs: list[TrialResult], class_names: list[str], seeds: list[int]) -> OOF:
    """The runs' predictions.csv as one (seed, image) table (oof_table)."""
    return oof_table([(trial_dir(out, r.trial) / "predictions.csv", r.trial.fold, r.trial.seed) for r in runs],
                     class_names, seeds)


def oof_table(files: list[tuple[Path, int, int]], class_names: list[str], seeds: list[int]) -> OOF:
    """(predictions.csv, evaluation fold, seed) of each run as one (seed, image) table; ValueError naming the
    file when a row names an unknown class, or the trial when a fold's seeds predicted different images (the
    folds are the same data for every seed and candidate)."""
    index = {c: i for i, c in enumerate(class_names)}
    label, fold, pred = {}, {}, {s: {} for s in seeds}
    for path, k, seed in files:
        for row in read_predictions(path):
            key = row["key"]
            if row["label"] not in index or row["prediction"] not in index:
                raise ValueError(f"{path}: key {key!r} names a class that is not among {class_names}")
            label[key], fold[key] = index[row["label"]], k
            pred[seed][key] = index[row["prediction"]]
    keys = sorted(label)
    for s in seeds:
        if set(pred[s]) != set(keys):
            raise ValueError(f"seed {s}'s trials predicted {len(pred[s])} images, the other seeds' {len(keys)}: "
                             "the folds differ between seeds")
    return OOF(keys, np.array([label[k] for k in keys]), np.array([fold[k] for k in keys]),
               np.array([[pred[s][k] for k in keys] for s in seeds]))


def class_names_of(results: dict[str, TrialResult]) -> list[str]:
    for r in results.values():
        if r.metrics:
            return list(r.metrics["per_class"])
    return []


def load_target(value: str) -> str | dict:
    """--target-prior: balanced, train, or a YAML file of class weights."""
    if value in target.TARGETS:
        return value
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"--target-prior {value!r}: expected balanced, train or a YAML file of class weights")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"--target-prior {path}: expected a mapping class -> weight")
    return data


def train_counts_of(results: dict) -> dict:
    """The data's own class mix: the training counts of the first finished trial (one fold's training part)."""
    return next((r.metrics.get("train_counts") or {} for r in results.values() if r.metrics), {})
