"""The recipe's expected score: each candidate's learning curve, from its CV runs to the recipe's data
(``tune/study.py --learning-curve``; docs/tune.md, "The recipe's expected score").

The study's estimate and interval are of a model trained as each CV run was: on (K - 1)/K of the images
less the validation carve-out. The recipe trains on every one of them (1.76x at 3 folds, 1.47x at 5), and
on a small long-tailed set that is worth points: the calibration benchmark measured recipes 1-14 points
above their own CV models (benchmarks/RESULTS.md). With ``--learning-curve`` every CV trial of a
candidate's selected point trains again on half its training images (``data.train_share``: per class,
whole groups, the same validation carve-out, so it chooses on the same data), evaluated on the same fold.
Two points of the curve, n_half and n_cv images per run, give the error e = 1 - macro-F1 as a power law
of the images trained on, the form learning curves take (Hestness et al. 2017; Cortes et al. 1994):

    b = ln(e_half / e_cv) / ln(n_cv / n_half),   clamped to b >= 0 (more data is not read as harmful)   (LC1)
    F1_recipe = 1 - e_cv (n_recipe / n_cv)^(-b)                                                         (LC2)

with n_recipe = every out-of-fold image (the recipe trains on all folds). The estimate applies LC1-LC2 to
the target-prior estimates (target.py) of the CV runs and the half runs; the interval applies them to
each replicate of one paired bootstrap of both (the same image weights, so the gain's own noise is in it).
Pure math in ``power_law_score``; the rest reads and plans files.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...config import load_config
from ..experiment import trial_dir
from . import target
from .results import oof_table
from .trials import StudyTrial

SHARE = 0.5          # the half runs' data.train_share
CURVE_DIR = "curve"  # under the study's output: one run directory per CV trial, named by the trial
NEEDS_TEST = ("--learning-curve extrapolates to the recipe's test score: the shards need a `test` part (fold-only "
              "shards run nested CV, whose recipe has no estimate to extrapolate)")


def power_law_score(f_cv, f_half, n_cv: float, n_half: float, n_target: float):
    """LC1-LC2: the macro-F1 at ``n_target`` images of a power law of the error through (n_half, f_half) and
    (n_cv, f_cv); arrays broadcast (bootstrap replicates). An error of 0 at n_cv stays 0."""
    e_cv, e_half = 1.0 - np.asarray(f_cv, dtype=float), 1.0 - np.asarray(f_half, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.log(e_half / e_cv) / math.log(n_cv / n_half)
    b = np.clip(np.nan_to_num(b, nan=0.0, posinf=0.0, neginf=0.0), 0.0, None)
    return 1.0 - e_cv * (n_target / n_cv) ** (-b), b


@dataclass
class Curve:
    """One candidate's two points and where they lead."""
    name: str
    n_cv: float
    n_half: float
    n_recipe: int
    cv: float
    half: float
    exponent: float
    recipe: float
    low: float
    high: float


def behind(estimate, search: dict) -> list[StudyTrial]:
    """The CV trials behind a complete estimate's outer scores (held-out protocol: its selected point)."""
    point = estimate.selections[None].point
    return [StudyTrial(estimate.name, point, s, k) for s in search["seeds"] for k in range(search["folds"])]


def curve_dir(out: Path, trial: StudyTrial) -> Path:
    return Path(out) / CURVE_DIR / trial.id


def curve_config(out: Path, trial: StudyTrial):
    """The trial's own config, trained on SHARE of its training images, in its curve directory; nothing kept
    for sharing (a kept prefix or validated weights are the full-data trial's)."""
    return load_config(trial_dir(out, trial) / "config.yaml", [
        f"data.train_share={SHARE}", f"run.output_dir={curve_dir(out, trial)}", "train.resume=auto",
        "train.keep_validated=false", "train.keep_prefix=false", "train.prefix_from=", "train.track_eval=false"])


def curve_runs(out: Path, search: dict, estimates: list) -> list:
    """batch.BatchRun per CV trial behind each complete estimate whose half run has not finished."""
    from ..batch import batch_run

    if "test" not in search["parts"]:
        raise ValueError(NEEDS_TEST)
    return [batch_run(t.id, e.name, curve_config(out, t)) for e in estimates if e.oof is not None
            for t in behind(e, search) if not (curve_dir(out, t) / "metrics.json").is_file()]


def share_half_runs(runs: list) -> tuple[list, list]:
    """(half runs to train, half runs to replay after them): as in the study (shared.py), a half run whose
    training twin is another half run of ``runs`` at the same fold and seed (posthoc_la's and tau_norm's over
    ce's) is replayed over that run's validated weights, which it therefore keeps."""
    import copy

    from ...config import from_dict
    from ..batch import BatchRun
    from .shared import Replay, twin_sources

    configs = {r.id: from_dict(r.config) for r in runs}
    sources = twin_sources([(r.id, (), configs[r.id]) for r in runs])
    by_id, kept_for_others = {r.id: r for r in runs}, set(sources.values())
    train = []
    for r in runs:
        if r.id in kept_for_others:
            kept = copy.deepcopy(r.config)
            kept["train"]["keep_validated"] = True
            r = BatchRun(r.id, r.group, kept)
        if r.id not in sources:
            train.append(r)
    return train, [Replay(i, configs[i], by_id[i].run_dir, by_id[s].run_dir) for i, s in sources.items()]


def read_half(out: Path, estimate, search: dict, class_names: list[str]) -> tuple[np.ndarray, float] | None:
    """(half-run predictions (S, N) aligned with the estimate's out-of-fold table, mean images per half run),
    or None until every half run has finished. ValueError naming the folder if they predicted other images."""
    dirs = [(curve_dir(out, t), t) for t in behind(estimate, search)]
    if not all((d / "metrics.json").is_file() for d, _ in dirs):
        return None
    half = oof_table([(d / "predictions.csv", t.fold, t.seed) for d, t in dirs], class_names, search["seeds"])
    if half.keys != estimate.oof.keys:
        raise ValueError(f"{out / CURVE_DIR}: the half runs of {estimate.name} predicted other images than its CV "
                         "trials (the study's folds changed?)")
    images = [sum(json.loads((d / "metrics.json").read_text())["train_counts"].values()) for d, _ in dirs]
    return half.predictions, float(np.mean(images))


def curves(out: Path, search: dict, estimates: list, class_names: list[str], prior: np.ndarray, *,
           n_boot: int = 2000, seed: int = 0) -> list[Curve]:
    """Every complete estimate whose half runs have all finished, extrapolated (LC1-LC2)."""
    if not (Path(out) / CURVE_DIR).is_dir():
        return []
    found = {e.name: (e, h) for e in estimates if e.oof is not None
             and (h := read_half(out, e, search, class_names)) is not None}
    if not found:
        return []
    first = next(iter(found.values()))[0].oof
    preds = {}
    for name, (e, (half, _)) in found.items():
        preds[(name, "cv")], preds[(name, "half")] = e.oof.predictions, half
    reps = target.paired_bootstrap(preds, first.labels, first.folds, prior.size, prior, n_boot=n_boot, seed=seed)
    out_rows = []
    for name, (e, (half, n_half)) in found.items():
        n_cv = float(np.mean([sum(m["train_counts"].values()) for m in e.components.values()]))
        n_recipe = len(e.oof.keys)
        cv = float(target.estimate_scores(e.oof.predictions, first.labels, prior.size, prior)["macro_f1"])
        hf = float(target.estimate_scores(half, first.labels, prior.size, prior)["macro_f1"])
        point, b = power_law_score(cv, hf, n_cv, n_half, n_recipe)
        spread, _ = power_law_score(reps[(name, "cv")], reps[(name, "half")], n_cv, n_half, n_recipe)
        lo, hi = target.percentile_interval(spread)
        out_rows.append(Curve(name, n_cv, n_half, n_recipe, cv, hf, float(b), float(point), lo, hi))
    return out_rows


def recipe_expectation(rec, rows: list[Curve]) -> list[str]:
    """study.md's line under the recommendation: what its recipe is expected to score (with half runs)."""
    mine = next((c for c in rows if rec is not None and c.name == rec.name), None)
    if mine is None:
        return []
    return [f"Its recipe, trained on all {mine.n_recipe} out-of-fold images ({mine.n_recipe / mine.n_cv:.2f}x a CV run's), "
            f"is expected to score macro-F1 **{mine.recipe:.3f} [{mine.low:.3f}, {mine.high:.3f}]** (learning curve, "
            "below).", ""]


def curve_markdown(rows: list[Curve]) -> list[str]:
    if not rows:
        return []
    lines = ["## The recipe's expected score (learning curve)", "",
             "The estimate above is of a model trained as each CV run was. The recipe trains on every out-of-fold "
             "image; each candidate's CV runs were trained again on half their images (`--learning-curve`), and the "
             "error's power law through the two points is read at the recipe's images (docs/tune.md, \"The "
             "recipe's expected score\"; eq. LC1-LC2). A gain that the half runs do not show is read as none.", "",
             "| candidate | images per CV run | per half run | recipe's | macro-F1 half / CV runs | exponent b | "
             "recipe's expected macro-F1 [95%] |", "|---|---:|---:|---:|---|---:|---|"]
    lines += [f"| {c.name} | {c.n_cv:.0f} | {c.n_half:.0f} | {c.n_recipe} | {c.half:.3f} / {c.cv:.3f} | "
              f"{c.exponent:.2f} | {c.recipe:.3f} [{c.low:.3f}, {c.high:.3f}] |" for c in rows]
    return lines + [""]
