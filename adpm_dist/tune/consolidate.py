"""The consolidating evaluator: trial metrics.json files -> the paper's tables.

Reads ``search.json`` and every trial's ``metrics.json`` (written by engine.train) and writes, into
the experiment directory:

- ``cv_results.csv``: one row per (alpha, beta, fold) cell of the grid: status, the trial the numbers
  come from (alpha = 0 cells all point to the one trained beta), headline metrics of the diffusion
  read-out and of the prior network alone, per-class F1;
- ``summary.md``: mean +- std over folds per (alpha, beta), laid out like the paper's Table 2 (rows
  alpha, columns beta), all metrics per configuration, and the best configuration's per-class table
  (like Tables 5/7);
- ``heatmap.png``: mean macro-F1 over the grid;
- ``best.yaml``: the base config with the best (alpha, beta), ready for launch/train.py.

Selection: best = highest mean macro-F1 over the CV folds' evaluation parts among configurations with
every fold finished (ties -> smaller alpha, then smaller beta). That is the paper's protocol; it
selects on the evaluation folds, so the winner's CV mean is optimistically biased. Inside each trial
the checkpoint is selected on validation data: the shards' `val` part, else a carve-out of its training folds (engine.train).
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .experiment import load_search, trial_dir
from .grid import Trial, isotropic, shared_source

HEADLINE = ("macro_f1", "accuracy", "macro_precision", "macro_recall", "balanced_accuracy")
NAMES = {"macro_f1": "macro-F1", "accuracy": "accuracy", "macro_precision": "macro-P", "macro_recall": "macro-R",
         "balanced_accuracy": "balanced acc."}


@dataclass
class Cell:
    """One (alpha, beta) of the grid with the folds that have results."""
    alpha: float
    beta: float
    alpha_label: str
    beta_label: str
    folds: dict[int, dict] = field(default_factory=dict)   # fold -> metrics.json
    status: dict[int, str] = field(default_factory=dict)   # fold -> done / early_stopped / failed / not run

    def values(self, key: str, prior: bool = False) -> np.ndarray:
        return np.array([(m["prior"] if prior else m)[key] for _, m in sorted(self.folds.items())], dtype=float)

    def mean(self, key: str, prior: bool = False) -> float:
        v = self.values(key, prior)
        return float(v.mean()) if len(v) else math.nan

    def std(self, key: str, prior: bool = False) -> float:
        v = self.values(key, prior)
        return float(v.std(ddof=1)) if len(v) > 1 else math.nan  # sample std over folds

    def per_class(self, key: str, name: str, prior: bool = False) -> np.ndarray:
        return np.array([(m["prior"] if prior else m)["per_class"][name][key] for _, m in sorted(self.folds.items())])


def trial_status(run_dir: Path) -> str:
    if (run_dir / "metrics.json").is_file():
        return "done"
    if (run_dir / "early_stopped.json").is_file():
        return "early_stopped"
    if (run_dir / "attempts.jsonl").is_file():
        return "failed"  # started but never evaluated (failed, or interrupted)
    return "not run"


def collect(out: Path, search: dict) -> tuple[list[Cell], list[dict]]:
    """Cells of the grid (alphas x betas) and the cv_results rows, from the trials' metrics.json."""
    alphas, betas = search["alphas"], search["betas"]
    beta_values = [b["value"] for b in betas]
    cells, rows = [], []
    for a in alphas:
        for b in betas:
            cell = Cell(a["value"], b["value"], a["label"], b["label"])
            for k in range(search["folds"]):
                source = shared_source(Trial(a["value"], b["value"], k), beta_values)
                run_dir = trial_dir(out, source)
                status = trial_status(run_dir)
                cell.status[k] = status
                metrics = json.loads((run_dir / "metrics.json").read_text()) if status == "done" else None
                if metrics is not None:
                    cell.folds[k] = metrics
                rows.append(result_row(cell, k, source, status, metrics))
            cells.append(cell)
    return cells, rows


def result_row(cell: Cell, fold: int, source: Trial, status: str, metrics: dict | None) -> dict:
    row = {"alpha": cell.alpha, "alpha_label": cell.alpha_label, "beta": cell.beta, "beta_label": cell.beta_label,
           "fold": fold, "eval_part": f"fold{fold}", "status": status, "source_trial": source.id}
    if metrics is None:
        return row
    row |= {k: metrics[k] for k in HEADLINE}
    row |= {f"prior_{k}": metrics["prior"][k] for k in HEADLINE}
    row |= {"n_samples": metrics["n_samples"], "best_epoch": metrics.get("best_epoch"),
            "val_macro_f1": metrics.get("val_macro_f1")}
    row |= {f"f1_{c}": v["f1"] for c, v in metrics["per_class"].items()}
    row |= {f"prior_f1_{c}": v["f1"] for c, v in metrics["prior"]["per_class"].items()}
    return row


def choose_best(cells: list[Cell], folds: int) -> tuple[Cell | None, bool]:
    """(best cell, complete?): highest mean macro-F1 among fully evaluated cells; ties -> smaller alpha, beta."""
    complete = [c for c in cells if len(c.folds) == folds]
    pool = complete or [c for c in cells if c.folds]
    if not pool:
        return None, False
    best = min(pool, key=lambda c: (-round(c.mean("macro_f1"), 12), c.alpha, c.beta))
    return best, bool(complete)


def write_csv(path: Path, rows: list[dict]) -> None:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)


def pm(mean: float, std: float, digits: int = 3) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def table2(cells: list[Cell], search: dict, best: Cell | None, key: str = "macro_f1") -> list[str]:
    """Rows alpha, columns beta; mean ± std over folds; the best cell in bold; '(k/N)' when incomplete."""
    betas = search["betas"]
    by = {(c.alpha, c.beta): c for c in cells}
    lines = ["| alpha \\ beta | " + " | ".join(b["label"] for b in betas) + " |",
             "|---|" + "---|" * len(betas)]
    for a in search["alphas"]:
        row = []
        for b in betas:
            c = by[(a["value"], b["value"])]
            text = pm(c.mean(key), c.std(key))
            if c.folds and len(c.folds) < search["folds"]:
                text += f" ({len(c.folds)}/{search['folds']})"
            row.append(f"**{text}**" if c is best else text)
        lines.append(f"| {a['label']} | " + " | ".join(row) + " |")
    return lines


def per_class_table(best: Cell, baseline: Cell | None, class_names: list[str]) -> list[str]:
    """Like the paper's Tables 5/7: per-class F1 and accuracy (= recall) of the best noise, vs alpha = 0 and the prior."""
    head = "| class | train n | lambda_j | support | F1 | accuracy (recall) |"
    sep = "|---|---:|---:|---:|---:|---:|"
    if baseline is not None and baseline.folds:
        head += " F1 alpha=0 |"
        sep += "---:|"
    head += " F1 prior |"
    sep += "---:|"
    lines = [head, sep]
    for name in class_names:
        train_n = np.mean([m.get("train_counts", {}).get(name, math.nan) for m in best.folds.values()])
        lam = np.mean([m.get("noise_levels", {}).get(name, math.nan) for m in best.folds.values()])
        support = sum(m["per_class"][name]["support"] for m in best.folds.values())
        f1, rec = best.per_class("f1", name), best.per_class("recall", name)
        cols = [name, f"{train_n:.0f}", f"{lam:.3f}", str(support), pm(f1.mean(), _std(f1)), pm(rec.mean(), _std(rec))]
        if baseline is not None and baseline.folds:
            b = baseline.per_class("f1", name)
            cols.append(pm(b.mean(), _std(b)))
        p = best.per_class("f1", name, prior=True)
        cols.append(pm(p.mean(), _std(p)))
        lines.append("| " + " | ".join(cols) + " |")
    return lines


def _std(v: np.ndarray) -> float:
    return float(v.std(ddof=1)) if len(v) > 1 else math.nan


def class_names_of(cells: list[Cell]) -> list[str]:
    for c in cells:
        for m in c.folds.values():
            return list(m["per_class"])
    return []


def write_heatmap(path: Path, cells: list[Cell], search: dict, best: Cell | None) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend, renders with Agg

    alphas, betas = search["alphas"], search["betas"]
    by = {(c.alpha, c.beta): c for c in cells}
    grid = np.array([[by[(a["value"], b["value"])].mean("macro_f1") for b in betas] for a in alphas])
    fig = Figure(figsize=(2.5 + 0.7 * len(betas), 1.4 + 0.6 * len(alphas)), dpi=120)
    ax = fig.add_subplot()
    masked = np.ma.masked_invalid(grid)
    im = ax.imshow(masked, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(betas)), [b["label"] for b in betas])
    ax.set_yticks(range(len(alphas)), [a["label"] for a in alphas])
    ax.set_xlabel("beta")
    ax.set_ylabel("alpha")
    ax.set_title(f"mean macro-F1 over {search['folds']} folds ({search['dataset']}); (k/N): folds with results",
                 fontsize=8)
    finite = grid[np.isfinite(grid)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            v, n = grid[i, j], len(by[(a["value"], b["value"])].folds)
            text = "-" if np.isnan(v) else f"{v:.3f}" + ("" if n == search["folds"] else f"\n({n}/{search['folds']})")
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="black" if np.isfinite(v) and v > mid else "white")
    if best is not None:
        i = [a["value"] for a in alphas].index(best.alpha)
        j = [b["value"] for b in betas].index(best.beta)
        ax.add_patch(_rect(j, i))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path)


def _rect(x: int, y: int):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2)


def best_config(search: dict, best: Cell, out: Path) -> dict:
    """The base config with the best noise; evaluated on `test` if the shards have one."""
    cfg = json.loads(json.dumps(search["base_config"]))
    cfg["noise"]["alpha"], cfg["noise"]["beta"] = best.alpha, best.beta
    cfg["data"]["shards"] = search["shards"]
    cfg["data"]["train_parts"] = []
    parts = _parts(Path(search["shards"]))
    if "test" in parts:
        cfg["data"]["eval_part"] = "test"
    elif cfg["data"]["eval_part"] not in parts:
        cfg["data"]["eval_part"] = "fold0"  # no held-out part: train on the other folds, report fold0
    cfg["run"]["output_dir"] = str(out / "best_run")
    return cfg


def _parts(shards: Path) -> list[str]:
    try:
        return list(json.loads((shards / "manifest.json").read_text())["parts"])
    except (OSError, ValueError, KeyError):
        return []


def write_best_yaml(path: Path, search: dict, best: Cell, complete: bool, out: Path) -> dict:
    cfg = best_config(search, best, out)
    header = [
        f"# Best noise of the search in {out}: alpha = {best.alpha_label}, beta = {best.beta_label}",
        f"# mean macro-F1 {pm(best.mean('macro_f1'), best.std('macro_f1'))} over "
        f"{len(best.folds)}/{search['folds']} CV folds" + ("" if complete else " (no configuration finished every fold)"),
        f"# Train and evaluate on part {cfg['data']['eval_part']!r}:",
        f"#   accelerate launch launch/train.py --config {path}",
    ]
    path.write_text("\n".join(header) + "\n" + yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def summary_markdown(search: dict, cells: list[Cell], best: Cell | None, complete: bool, rows: list[dict]) -> str:
    folds = search["folds"]
    alpha0 = [c for c in cells if isotropic(c.alpha)]
    betas = search["betas"]
    lines = [f"# Noise search on {search['dataset']}: {folds}-fold cross-validation", "",
             f"- config: `{search['config']}`" + (f" with `{' '.join(search['overrides'])}`" if search["overrides"] else ""),
             f"- shards: `{search['shards']}`",
             f"- grid: alpha in {{{', '.join(a['label'] for a in search['alphas'])}}}, "
             f"beta in {{{', '.join(b['label'] for b in betas)}}}; {len(search['trials'])} trials trained",
             f"- consolidated: {time.strftime('%Y-%m-%d %H:%M:%S')}", "",
             "## Protocol", "",
             f"Each trial (alpha, beta, fold k) trains on the other {folds - 1} fold(s), selects its checkpoint on a "
             "validation data (`data.val_part`: the shards' `val` part, else a carve-out of those training folds), and "
             "is evaluated once on fold k. "
             "**The best (alpha, beta) is chosen by the mean macro-F1 over the CV folds' evaluation parts, as the "
             "paper does** (its Table 2); selecting on the evaluation folds makes the winner's CV mean optimistically "
             "biased. The fixed `test` part (digits-LT) is never used by the search; `best.yaml` evaluates on it.", ""]
    if alpha0 and len(betas) > 1:
        lines += [f"alpha = 0 gives lambda_j = 1 for every class and every beta (isotropic DiffMIC noise): only "
                  f"beta = {betas[0]['label']} was trained and its results fill the whole alpha = 0 row "
                  "(the paper's Table 2 row alpha = 0 is constant too).", ""]
    lines += [f"## Macro-F1, mean ± std over {folds} folds (Table 2 layout)", ""]
    lines += table2(cells, search, best)
    lines += ["", "std is the sample standard deviation over folds; (k/N): only k of N folds have results.", ""]
    lines += ["## Every configuration", "",
              "| alpha | beta | folds | " + " | ".join(NAMES[k] for k in HEADLINE) + " | prior macro-F1 | prior accuracy |",
              "|---|---|---|" + "---|" * (len(HEADLINE) + 2)]
    for c in cells:
        if c.folds:
            lines.append(f"| {c.alpha_label} | {c.beta_label} | {len(c.folds)}/{folds} | "
                         + " | ".join(pm(c.mean(k), c.std(k)) for k in HEADLINE)
                         + f" | {pm(c.mean('macro_f1', True), c.std('macro_f1', True))}"
                         + f" | {pm(c.mean('accuracy', True), c.std('accuracy', True))} |")
    names = class_names_of(cells)
    if best is not None:
        lines += ["", f"## Best: alpha = {best.alpha_label}, beta = {best.beta_label} "
                      f"(mean macro-F1 {pm(best.mean('macro_f1'), best.std('macro_f1'), digits=4)}"
                      + ("" if complete else ", incomplete: no configuration finished every fold") + ")", "",
                  "Per class, mean ± std over folds (Tables 5/7 layout); accuracy per class = recall; train n and "
                  "lambda_j averaged over folds.", ""]
        baseline = next((c for c in alpha0 if c.folds), None) if not isotropic(best.alpha) else None
        lines += per_class_table(best, baseline, names)
        lines += ["", "<details><summary>Per-class mean F1 of every configuration</summary>", "",
                  "| alpha | beta | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for c in cells:
            if c.folds:
                lines.append(f"| {c.alpha_label} | {c.beta_label} | "
                             + " | ".join(f"{c.per_class('f1', n).mean():.3f}" for n in names) + " |")
        lines += ["", "</details>"]
    missing = [r for r in rows if r["status"] != "done"]
    if missing:
        lines += ["", "## Cells without results", "",
                  "| alpha | beta | fold | status | trial |", "|---|---|---|---|---|"]
        lines += [f"| {r['alpha_label']} | {r['beta_label']} | {r['fold']} | {r['status']} | {r['source_trial']} |"
                  for r in missing]
    return "\n".join(lines) + "\n"


def consolidate(out: str | Path) -> dict:
    """Write cv_results.csv, summary.md, heatmap.png and best.yaml into the experiment dir `out`."""
    out = Path(out).resolve()
    search = load_search(out)
    cells, rows = collect(out, search)
    best, complete = choose_best(cells, search["folds"])
    write_csv(out / "cv_results.csv", rows)
    (out / "summary.md").write_text(summary_markdown(search, cells, best, complete, rows))
    write_heatmap(out / "heatmap.png", cells, search, best)
    written = [out / "cv_results.csv", out / "summary.md", out / "heatmap.png"]
    if best is not None:
        write_best_yaml(out / "best.yaml", search, best, complete, out)
        written.append(out / "best.yaml")
    else:
        (out / "best.yaml").unlink(missing_ok=True)  # never leave a stale "best" of an earlier run
    return {"best": best, "complete": complete, "cells": cells, "rows": rows, "written": written,
            "table": "\n".join(table2(cells, search, best)),
            "missing": [r for r in rows if r["status"] != "done"]}
