"""`--fit`, after phase 2: the tables of a fitted-law search (cv_results.csv, summary.md, protocol.json,
noise_fit.json with the results and the cost), reusing consolidate.py's cells, rows and tables.

Every fold's figure is honest: fold k's noise settings come from validation data of a run trained
without fold k, both runs select their checkpoint on validation data, and fold k is scored once.
"""
from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import yaml

from ..config import changed_keys, from_dict, result_settings, set_key
from ..files import atomic_write_text
from .cells import HEADLINE, NAMES, Cell, per_class_table, pm, result_row, trial_status, write_csv
from .experiment import load_search, trial_dir
from .fit_law import FIT_FILE, FIT_PLOT, fit_folds, load_cost, write_fit_plot, write_noise_fit
from .fit_plan import FITTED, PRIOR, FitTrial
from .grid import PAPER_ALPHAS, PAPER_BETAS, build_trials, parse_values
from .protocol import NESTED, checkpoint_selection_parts, entry, mean_entry, write_protocol


def fold_results(out: Path, search: dict, fits: dict[int, dict]) -> tuple[Cell, list[dict]]:
    """The phase-2 folds as one Cell (their settings differ per fold) and one cv_results row per fold."""
    estimate = Cell(math.nan, math.nan, "fitted per fold", "")
    rows = []
    for k in range(search["folds"]):
        trial, fit = FitTrial(FITTED, k), fits.get(k, {})
        status = trial_status(trial_dir(out, trial)) if "eq14" in fit else "no fit"
        stale = law_changes(trial_dir(out, trial), fit["eq14"]) if status == "done" else []
        if stale:  # phase 1 changed since: that score belongs to another law and must not mix into this one
            status = "trained at another law: " + "; ".join(stale)
        metrics = json.loads((trial_dir(out, trial) / "metrics.json").read_text()) if status == "done" else None
        cell = Cell(fit.get("alpha", math.nan), fit.get("beta", math.nan), "fitted", "")
        if metrics is not None:
            estimate.folds[k] = metrics
        row = result_row(cell, k, trial, status, metrics)
        row |= {"c": fit.get("c", math.nan), "r2": fit.get("r2", math.nan),
                "noise.formula": fit.get("eq14", {}).get("noise.formula", ""),
                "noise.beta": fit.get("eq14", {}).get("noise.beta", math.nan), "fit_error": fit.get("error", "")}
        rows.append(row)
    return estimate, rows


def law_changes(run_dir: Path, settings: dict) -> list[str]:
    """The eq. 14 keys on which phase 2's saved config differs from the law fitted now (empty: the same law)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return [f"{path} missing (the law it was trained at is unknown)"]
    saved = from_dict(yaml.safe_load(path.read_text()) or {})
    refit = copy.deepcopy(saved)
    for key, value in settings.items():
        set_key(refit, key, value)
    trained, fitted = result_settings(saved), result_settings(refit)
    return [f"{key} trained {trained[key]!r}, fitted now {fitted[key]!r}" for key in changed_keys(saved, refit)]


def grid_trials(search: dict) -> int:
    """What the paper's grid (5 alphas x 10 betas) would train on the same folds and protocol."""
    alphas, betas = parse_values(list(PAPER_ALPHAS), "alphas"), parse_values(list(PAPER_BETAS), "betas")
    return len(build_trials(alphas, betas, search["folds"], nested=search.get("protocol") == NESTED))


def estimate_table(search: dict, fits: dict[int, dict], rows: list[dict], estimate: Cell) -> list[str]:
    lines = ["| fold | alpha | beta | c | R² | eq. 14 | " + " | ".join(NAMES[k] for k in HEADLINE)
             + " | prior macro-F1 | trial |", "|---|---|---|---|---|---|" + "---|" * (len(HEADLINE) + 2)]
    for row in rows:
        f = fits.get(row["fold"], {})
        law = ([f"{f['alpha']:.3g}", f"{f['beta']:.3g}", f"{f['c']:.3g}", f"{f['r2']:.2f}",
                f"{f['eq14']['noise.formula']}, beta {f['eq14']['noise.beta']:.3g}"] if "eq14" in f else ["-"] * 5)
        scores = ([f"{row[k]:.3f}" for k in HEADLINE] + [f"{row['prior_macro_f1']:.3f}"] if "macro_f1" in row
                  else [row["status"]] + ["-"] * len(HEADLINE))
        lines.append(f"| {row['fold']} | " + " | ".join(law + scores) + f" | {row['source_trial']} |")
    lines.append("| **mean ± std** | | | | | | " + " | ".join(f"**{pm(estimate.mean(k), estimate.std(k))}**"
                                                            for k in HEADLINE)
                 + f" | {pm(estimate.mean('macro_f1', True), estimate.std('macro_f1', True))} | |")
    return lines


def cost_lines(search: dict, cost: dict) -> list[str]:
    lines = ["## Cost", "", "| phase | trials | run by this directory's invocations | wall time |", "|---|---:|---:|---:|"]
    for phase, what in ((PRIOR, "1: prior network, fit data"), (FITTED, "2: ADPM at the fitted law")):
        c = cost.get(phase)
        if c:
            lines.append(f"| {what} | {c['trials']} | {c['trials_run']} | {c['wall_s']:.0f} s |")
    lines += ["", f"The paper's grid (alpha in {{{', '.join(PAPER_ALPHAS)}}} x beta 1..10) would train "
                  f"{grid_trials(search)} trials on the same folds"
                  + (" (nested CV: the shards have no `test` part)" if search.get("protocol") == NESTED else "")
                  + f"; --fit trains {2 * search['folds']}.", ""]
    return lines


def fit_summary_markdown(search: dict, fits: dict[int, dict], rows: list[dict], estimate: Cell, cost: dict) -> str:
    folds = search["folds"]
    lines = [f"# Noise law fitted per fold on {search['dataset']}: {folds}-fold cross-validation", "",
             f"- config: `{search['config']}`" + (f" with `{' '.join(search['overrides'])}`" if search["overrides"] else ""),
             f"- shards: `{search['shards']}`", f"- consolidated: {time.strftime('%Y-%m-%d %H:%M:%S')}", "",
             "## Protocol", "", PROTOCOL_TEXT, "",
             f"## Estimate: macro-F1, mean ± std over {len(estimate.folds)}/{folds} folds", ""]
    lines += estimate_table(search, fits, rows, estimate)
    lines += ["", "std is the sample standard deviation over folds. c: the law's floor; eq. 14: the `noise.*` "
                  "settings that give lambda_j = E[L](n_j) / E[L](n_max) (B with beta' = beta / c; power when c = 0).",
              "", "## Does the per-class loss follow a power law in n?", ""]
    lines += [f"- fold {k}: " + (f.get("verdict") or f"no fit: {f.get('error')}") for k, f in sorted(fits.items())]
    names = next((list(m["per_class"]) for m in estimate.folds.values()), [])
    if names:
        lines += ["", "## Per class, mean ± std over folds", ""] + per_class_table(estimate, None, names)
    lines += [""] + cost_lines(search, cost)
    return "\n".join(lines) + "\n"


PROTOCOL_TEXT = (
    "Phase 1 trains the prior network alone (`method=prior`) per fold k on the other folds; eq. 7, "
    "E[L](n) = beta n^-alpha + c, is fitted to its per-class validation losses at its kept epoch against its "
    "training counts (weighted by validation samples per class; bootstrap intervals over those samples). "
    "Phase 2 trains ADPM on the same folds at the fitted law's eq. 14 settings and scores it once on fold k. "
    "Validation data is the shards' `val` part or a carve-out of the training folds, never fold k: no "
    "figure is chosen on the part it is scored on, so no nested CV is needed even without a `test` part. "
    "`protocol.json` lists every figure with the parts it was selected and evaluated on.")


def fit_protocol_entries(search: dict, rows: list[dict], estimate: Cell) -> list[dict]:
    parts, val_part = search.get("parts") or [], search["base_config"]["data"]["val_part"]
    entries = []
    for row in rows:
        if row["status"] != "done":
            continue
        trial = FitTrial(FITTED, row["fold"])
        train = trial.train_folds(search["folds"])
        chosen = checkpoint_selection_parts(train, parts, val_part, trial.eval_part)  # fit data and checkpoints
        entries.append(entry(f"cv_results.csv: fitted law, fold{row['fold']}", chosen, [trial.eval_part], train,
                             row["macro_f1"], note="noise law fitted on prior_fold validation losses; "
                                                   "checkpoint selected on the same validation data"))
    if entries:
        entries.append(mean_entry(f"summary.md estimate: mean ± std over {len(entries)} folds", list(entries),
                                  estimate.mean("macro_f1")))
    return entries


def finite(value: float) -> float | None:
    """JSON has no NaN: a mean over no folds (or a std over one) is written as null."""
    return None if value is None or math.isnan(value) else float(value)


def consolidate_fit(out: str | Path, n_boot: int | None = None) -> dict:
    """Refit every fold from phase 1 (deterministic: seeded) and write every output of a --fit search."""
    out = Path(out).resolve()
    search = load_search(out)
    fits = fit_folds(out, search["folds"], n_boot if n_boot is not None else search.get("n_boot", 200))
    estimate, rows = fold_results(out, search, fits)
    cost = load_cost(out)
    write_csv(out / "cv_results.csv", rows)
    atomic_write_text(out / "summary.md", fit_summary_markdown(search, fits, rows, estimate, cost))
    write_protocol(out, fit_protocol_entries(search, rows, estimate))
    results = {"macro_f1": {"mean": finite(estimate.mean("macro_f1")), "std": finite(estimate.std("macro_f1")),
                            "folds": len(estimate.folds)},
               "per_fold": {r["fold"]: {"status": r["status"], "macro_f1": r.get("macro_f1")} for r in rows}}
    write_noise_fit(out, search, fits, {"results": results})
    write_fit_plot(out / FIT_PLOT, fits)
    written = [out / n for n in ("noise_fit.json", "noise_fit.png", "cv_results.csv", "summary.md", "protocol.json")]
    return {"fits": fits, "estimate": estimate, "rows": rows, "cost": cost, "written": written,
            "missing": [r for r in rows if r["status"] != "done"], "file": out / FIT_FILE,
            "partial": [f"fold {r['fold']}: {r['status']}" for r in rows if r["status"] != "done"]}


def reported_runs(out: Path, search: dict) -> tuple[list[Path], str]:
    """--fit reports the fitted-law runs, one per fold."""
    runs = [trial_dir(out, FitTrial(FITTED, k)) for k in range(search["folds"])]
    return [r for r in runs if (r / "metrics.json").is_file()], "the fitted-law runs, one per fold"
