"""`--fit`, between the phases: eq. 7 fitted per fold to phase 1's validation losses; noise_fit.json/png.

Fold k's fit reads only ``trials/prior_fold{k}/metrics.json``: ``selection.val_class_losses`` (per class,
the per-sample validation NLLs of the prior network at its kept epoch) and ``train_counts``. Nothing of
that run's evaluation on fold k (its top-level metrics, predictions.csv) is read: that would leak fold
k into the settings fold k is then scored with.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..diffusion.noise import class_noise_levels
from ..diffusion.noise_fit import bootstrap_fit, eq14_settings
from ..files import atomic_write_json
from .experiment import trial_dir
from .fit_plan import PRIOR, FitTrial

FIT_FILE = "noise_fit.json"
FIT_PLOT = "noise_fit.png"
COST_FILE = "fit_cost.json"


def fold_losses(out: Path, fold: int) -> tuple[list[str], list[int], list[list[float]], dict[str, str]]:
    """(class names, training counts, per-sample validation losses, left-out classes -> why) of prior_fold{k}."""
    path = trial_dir(out, FitTrial(PRIOR, fold)) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: phase 1 of fold {fold} has not finished (see its train.log)")
    metrics = json.loads(path.read_text())
    losses = (metrics.get("selection") or {}).get("val_class_losses")
    if not losses:
        raise ValueError(f"{path}: no selection.val_class_losses (per-class validation losses); the run had no "
                         "validation data, or was trained before the engine recorded them (re-run it)")
    counts = metrics.get("train_counts")
    if not isinstance(counts, dict):
        raise ValueError(f"{path}: no train_counts ({{class: training count}}); got {counts!r}")
    left_out = {name: "no validation samples" for name in counts if name not in losses}
    names = []
    for name in losses:
        if name not in counts:
            raise ValueError(f"{path}: class {name!r} of selection.val_class_losses is not in train_counts")
        if counts[name] <= 0:
            left_out[name] = f"training count {counts[name]} (n^-alpha needs n > 0)"
        else:
            names.append(name)
    return names, [counts[n] for n in names], [losses[n] for n in names], left_out


def fit_fold(out: Path, fold: int, n_boot: int, seed: int = 0) -> dict:
    """Fold k's entry of noise_fit.json: the data used, the law with bootstrap intervals, R^2, eq. 14 overrides."""
    names, counts, losses, left_out = fold_losses(out, fold)
    boot = bootstrap_fit(counts, losses, n_boot=n_boot, seed=seed)
    fit = boot.fit
    settings = eq14_settings(fit)
    levels = class_noise_levels(counts, alpha=settings["noise.alpha"], beta=settings["noise.beta"],
                                formula=settings["noise.formula"])
    return {"fold": fold, "fitted_on": f"{FitTrial(PRIOR, fold).id}: selection.val_class_losses, train_counts",
            "classes": names, "train_counts": dict(zip(names, counts)),
            "mean_losses": dict(zip(names, fit.losses)), "val_samples": dict(zip(names, map(int, fit.weights))),
            "left_out": left_out, "alpha": fit.alpha, "beta": fit.beta, "c": fit.c,
            "intervals": {k: list(v) for k, v in boot.intervals.items()}, "level": boot.level, "n_boot": n_boot,
            "r2": fit.r2, "r2_adjusted": fit.r2_adjusted, "sse": fit.sse, "sse_constant": fit.sse_constant,
            "verdict": fit.verdict(), "eq14": settings, "noise_levels": dict(zip(names, levels.tolist()))}


def fit_folds(out: Path, folds: int, n_boot: int) -> dict[int, dict]:
    """Every fold's fit, or {"fold", "error"} for a fold whose phase-1 run is missing or unusable."""
    fits = {}
    for k in range(folds):
        try:
            fits[k] = fit_fold(out, k, n_boot)
        except (FileNotFoundError, ValueError) as e:
            fits[k] = {"fold": k, "error": str(e)}
    return fits


def fold_settings(fits: dict[int, dict]) -> dict[int, dict]:
    return {k: f["eq14"] for k, f in fits.items() if "eq14" in f}


def add_cost(out: Path, phase: str, trials: int, ran: int, wall_s: float) -> dict:
    """Accumulate a phase's wall time over invocations (--resume adds to it) in fit_cost.json."""
    path = out / COST_FILE
    cost = json.loads(path.read_text()) if path.is_file() else {}
    entry = cost.get(phase, {"trials": trials, "trials_run": 0, "wall_s": 0.0, "invocations": 0})
    entry |= {"trials": trials, "trials_run": entry["trials_run"] + ran,
              "wall_s": round(entry["wall_s"] + wall_s, 1), "invocations": entry["invocations"] + 1}
    cost[phase] = entry
    atomic_write_json(path, cost)
    return cost


def load_cost(out: Path) -> dict:
    path = out / COST_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_noise_fit(out: Path, search: dict, fits: dict[int, dict], extra: dict | None = None) -> Path:
    """noise_fit.json: per fold the fit and its data; the cost of each phase; `extra` (phase 2's results)."""
    data = {"dataset": search["dataset"], "folds": search["folds"], "protocol": search.get("protocol"),
            "law": "E[L](n) = beta n^-alpha + c (eq. 7); lambda_j = E[L](n_j) / E[L](n_max) (eq. 14)",
            "fits": [fits[k] for k in sorted(fits)], "cost": load_cost(out)} | (extra or {})
    return atomic_write_json(out / FIT_FILE, data)


def write_fit_plot(path: Path, fits: dict[int, dict]) -> Path:
    """Per-class mean validation loss against the training count (log x), the fitted law per fold."""
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, no global backend

    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    ax = fig.add_subplot()
    for k, f in sorted(fits.items()):
        if "error" in f:
            continue
        n = np.array([f["train_counts"][c] for c in f["classes"]], dtype=float)
        loss = np.array([f["mean_losses"][c] for c in f["classes"]])
        dots = ax.scatter(n, loss, s=12 + 0.2 * np.array([f["val_samples"][c] for c in f["classes"]]), alpha=0.7)
        grid = np.geomspace(n.min(), n.max(), 100)
        ax.plot(grid, f["beta"] * grid ** -f["alpha"] + f["c"], color=dots.get_facecolor()[0][:3],
                label=f"fold {k}: alpha {f['alpha']:.3g}, beta {f['beta']:.3g}, c {f['c']:.3g}, R² {f['r2']:.2f}")
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class (n)")
    ax.set_ylabel("mean validation NLL of the prior")
    ax.set_title("eq. 7 fitted per fold: E[L](n) = beta n^-alpha + c (dot size: validation samples)", fontsize=8)
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path
