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
- ``best.yaml``: the base config with the best (alpha, beta), ready for launch/train.py;
- ``protocol.json``: every reported figure with the parts it was selected on and evaluated on (protocol.py).

Selection: best = highest mean macro-F1 over the CV folds' evaluation parts among configurations with
every fold finished (ties -> smaller alpha, then smaller beta). That is the paper's protocol; it
selects on the evaluation folds, so the winner's CV mean is optimistically biased. With a `test`
part, best.yaml evaluates the winner on it. Without one (fold-only shards) the search is nested
(protocol.py): per outer fold k the same rule picks a point on the inner CV over the other folds,
and that point's CV trial on fold k is its outer score; the mean over outer folds is the estimate.
Inside each trial the checkpoint is selected on validation data: the shards' `val` part, else a
carve-out of its training folds (engine.train).
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..files import atomic_write_text
from .cells import (HEADLINE, NAMES, Cell, OuterFold, nested_estimate, partial_banner, pm, protocol_of,  # noqa: F401
                    read_metrics, result_row, trial_status, write_csv)
from .experiment import load_search, shard_parts, trial_dir
from .grid import Trial, shared_source
from .grid_report import summary_markdown, table2, write_heatmap
from .protocol import NESTED, checkpoint_selection_parts, entry, mean_entry, write_protocol


def collect(out: Path, search: dict, outer: int | None = None) -> tuple[list[Cell], list[dict]]:
    """Cells of the grid (alphas x betas) and the cv_results rows, from the trials' metrics.json.

    `outer` k: the inner CV of outer fold k (folds other than k), else the K-fold CV.
    """
    alphas, betas = search["alphas"], search["betas"]
    beta_values = [b["value"] for b in betas]
    cells, rows = [], []
    for a in alphas:
        for b in betas:
            cell = Cell(a["value"], b["value"], a["label"], b["label"])
            for k in range(search["folds"]):
                if k == outer:
                    continue
                source = shared_source(Trial(a["value"], b["value"], k, outer), beta_values)
                run_dir = trial_dir(out, source)
                status = trial_status(run_dir)
                cell.status[k] = status
                metrics = read_metrics(run_dir, status)
                if metrics is not None:
                    cell.folds[k] = metrics
                rows.append(result_row(cell, k, source, status, metrics))
            cells.append(cell)
    return cells, rows


def choose_best(cells: list[Cell], folds: int) -> tuple[Cell | None, bool]:
    """(best cell, complete?): highest mean macro-F1 among fully evaluated cells; ties -> smaller alpha, beta."""
    complete = [c for c in cells if len(c.folds) == folds]
    pool = complete or [c for c in cells if c.folds]
    if not pool:
        return None, False
    best = min(pool, key=lambda c: (-round(c.mean("macro_f1"), 12), c.alpha, c.beta))
    return best, bool(complete)


def nested_folds(out: Path, search: dict) -> tuple[list[OuterFold], list[dict]]:
    """Each outer fold's choice and score, and the inner trials' cv_results rows."""
    folds, beta_values = search["folds"], [b["value"] for b in search["betas"]]
    outer_folds, rows = [], []
    for k in range(folds):
        inner, inner_rows = collect(out, search, outer=k)
        rows += inner_rows
        choice, complete = choose_best(inner, folds - 1)
        if choice is None:
            outer_folds.append(OuterFold(k, None, False, None, "no inner results", None))
            continue
        source = shared_source(Trial(choice.alpha, choice.beta, k), beta_values)
        status = trial_status(trial_dir(out, source))
        metrics = read_metrics(trial_dir(out, source), status)
        outer_folds.append(OuterFold(k, choice, complete, source, status, metrics))
    return outer_folds, rows


def best_config(search: dict, best: Cell, out: Path) -> dict:
    """The base config with the best noise; evaluated on `test` if the shards have one (else on a fold
    that helped choose it: write_best_yaml says so)."""
    cfg = json.loads(json.dumps(search["base_config"]))
    cfg["noise"]["alpha"], cfg["noise"]["beta"] = best.alpha, best.beta
    cfg["data"]["shards"] = search["shards"]
    cfg["data"]["train_parts"] = []
    parts = search.get("parts") or shard_parts(search["shards"])
    if "test" in parts:
        cfg["data"]["eval_part"] = "test"
    elif cfg["data"]["eval_part"] not in parts:
        cfg["data"]["eval_part"] = "fold0"  # no held-out part: train on the other folds, report fold0
    cfg["run"]["output_dir"] = str(out / "best_run")
    return cfg




def write_best_yaml(path: Path, search: dict, best: Cell, complete: bool, out: Path,
                    estimate: Cell | None = None) -> dict:
    """best.yaml; for a nested search its header names the nested estimate as the figure to publish."""
    cfg = best_config(search, best, out)
    header = [
        f"# Best noise of the search in {out}: alpha = {best.alpha_label}, beta = {best.beta_label}",
        f"# selected on the mean macro-F1 {pm(best.mean('macro_f1'), best.std('macro_f1'))} over "
        f"{len(best.folds)}/{search['folds']} CV folds" + ("" if complete else " (no configuration finished every fold)")
        + " (optimistic: chosen on those folds)",
        f"# Train and evaluate on part {cfg['data']['eval_part']!r}:",
        f"#   accelerate launch launch/train.py --config {path}",
    ]
    if estimate is not None:
        header += [
            f"# The shards have no part the search did not read: {cfg['data']['eval_part']!r} helped choose this",
            "# (alpha, beta), so the score this run reports on it is NOT an estimate. Publish the nested CV",
            f"# estimate instead: macro-F1 {pm(estimate.mean('macro_f1'), estimate.std('macro_f1'))} over "
            f"{len(estimate.folds)} outer folds (summary.md, protocol.json).",
        ]
    atomic_write_text(path, "\n".join(header) + "\n" + yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def trial_parts(search: dict, trial: Trial) -> tuple[list[str], list[str]]:
    """(trained on, checkpoint selected on) of one trial, as experiment.trial_settings sets them."""
    train = trial.train_folds(search["folds"])
    parts = search.get("parts") or shard_parts(search["shards"])
    selected = checkpoint_selection_parts(train, parts, search["base_config"]["data"]["val_part"], trial.eval_part)
    return train, selected


def protocol_entries(search: dict, cells: list[Cell], rows: list[dict], best: Cell | None,
                     outer_folds: list[OuterFold] | None) -> list[dict]:
    """protocol.json: every figure of cv_results.csv and summary.md with the parts it was selected and evaluated on."""
    entries, components = [], {}
    for r in rows:
        if r["status"] != "done":
            continue
        outer = None if r["outer"] == "" else int(r["outer"])
        trial = Trial(r["alpha"], r["beta"], r["fold"], outer)  # the cell's trial (alpha = 0: same parts as its source)
        train, selected = trial_parts(search, trial)
        where = "" if outer is None else f"inner CV of outer fold {outer}: "
        e = entry(f"cv_results.csv: {where}alpha={r['alpha_label']} beta={r['beta_label']}, fold{r['fold']}",
                  selected, [trial.eval_part], train, r["macro_f1"])
        entries.append(e)
        components.setdefault((outer, r["alpha"], r["beta"]), []).append(e)
    table = "selection table" if outer_folds is not None else "CV table"
    for c in cells:
        if (None, c.alpha, c.beta) in components:
            entries.append(mean_entry(f"summary.md {table}: alpha={c.alpha_label} beta={c.beta_label}, mean ± std "
                                      f"over {len(c.folds)}/{search['folds']} folds",
                                      components[(None, c.alpha, c.beta)], c.mean("macro_f1")))
    if outer_folds is None:
        if best is not None:
            entries.append(best_entry(search, best))
        return entries
    outer = [outer_entry(search, o) for o in outer_folds if o.metrics]
    entries += outer
    if outer:
        estimate = nested_estimate(outer_folds)
        entries.append(mean_entry(f"summary.md nested CV estimate: mean ± std over {len(outer)} outer folds",
                                  outer, estimate.mean("macro_f1")))
    return entries


def best_entry(search: dict, best: Cell) -> dict:
    """The held-out protocol's 'Best' figure: picked on the same folds it is averaged over (optimistic)."""
    folds = [f"fold{k}" for k in sorted(best.folds)]
    selected = set(folds)
    for k in best.folds:
        selected |= set(trial_parts(search, Trial(best.alpha, best.beta, k))[1])
    return entry(f"summary.md Best: alpha={best.alpha_label} beta={best.beta_label}, mean over {len(folds)} CV folds",
                 sorted(selected), folds, [f"fold{k}" for k in range(search["folds"])], best.mean("macro_f1"),
                 note="optimistic: chosen on these folds; best.yaml evaluates this point on the test part")


def outer_entry(search: dict, o: OuterFold) -> dict:
    """Outer fold k: chosen on the inner CV (every fold but k), trained without k, scored on k."""
    train, checkpoint = trial_parts(search, o.source)
    inner = [f"fold{j}" for j in range(search["folds"]) if j != o.fold]
    return entry(f"summary.md nested CV estimate, outer fold {o.fold}: alpha={o.choice.alpha_label} "
                 f"beta={o.choice.beta_label}", [*inner, *checkpoint], [f"fold{o.fold}"], train, o.metrics["macro_f1"])


def consolidate(out: str | Path) -> dict:
    """Write cv_results.csv, summary.md, heatmap.png, best.yaml and protocol.json into the experiment dir `out`."""
    out = Path(out).resolve()
    search = load_search(out)
    if search.get("mode", "grid") != "grid":  # --fit and studies have their own evaluators (evaluator.py picks)
        raise ValueError(f"{out} holds a {search['mode']} search, not a grid: use adpm_dist.tune.evaluator.consolidate")
    cells, rows = collect(out, search)
    best, complete = choose_best(cells, search["folds"])
    outer_folds, estimate = None, None
    if protocol_of(search) == NESTED:
        outer_folds, inner_rows = nested_folds(out, search)
        rows += inner_rows
        estimate = nested_estimate(outer_folds)
    partial = partial_reasons(search, best, outer_folds)
    write_csv(out / "cv_results.csv", rows)
    atomic_write_text(out / "summary.md", partial_banner(partial)
                      + summary_markdown(search, cells, best, complete, rows, outer_folds))
    write_heatmap(out / "heatmap.png", cells, search, best)
    write_protocol(out, protocol_entries(search, cells, rows, best, outer_folds))
    written = [out / "cv_results.csv", out / "summary.md", out / "heatmap.png", out / "protocol.json"]
    if best is not None:
        write_best_yaml(out / "best.yaml", search, best, complete, out, estimate)
        written.append(out / "best.yaml")
    else:
        (out / "best.yaml").unlink(missing_ok=True)  # never leave a stale "best" of an earlier run
    return {"best": best, "complete": complete, "cells": cells, "rows": rows, "written": written,
            "table": "\n".join(table2(cells, search, best)), "protocol": protocol_of(search),
            "outer_folds": outer_folds, "estimate": estimate, "partial": partial,
            "missing": [r for r in rows if r["status"] != "done"]}


def partial_reasons(search: dict, best: Cell | None, outer_folds: list[OuterFold] | None) -> list[str]:
    """Why the figure to publish is not the full estimate (empty: it is): a nested estimate over fewer
    outer folds than the search has, or chosen on an incomplete inner CV; a CV winner missing folds."""
    folds = search["folds"]
    if outer_folds is None:
        if best is None:
            return ["no configuration has any evaluated fold"]
        return [] if len(best.folds) == folds else [f"the best configuration has {len(best.folds)}/{folds} folds"]
    reasons = [f"outer fold {o.fold}: {o.status}" for o in outer_folds if o.metrics is None]
    reasons += [f"outer fold {o.fold}: chosen on an incomplete inner CV" for o in outer_folds
                if o.choice is not None and not o.inner_complete]
    return reasons


def reported_runs(out: Path, search: dict) -> tuple[list[Path], str]:
    """The grid's reported configuration's runs: the nested estimate's outer-fold runs, or the CV best's."""
    if search.get("protocol") == NESTED:
        outer, _ = nested_folds(out, search)
        runs = [trial_dir(out, o.source) for o in outer if o.metrics]
        picks = ", ".join(f"fold{o.fold}: alpha={o.choice.alpha_label} beta={o.choice.beta_label}"
                          for o in outer if o.metrics)
        return runs, f"the nested CV estimate's outer-fold runs ({picks})"
    cells, _ = collect(out, search)
    best, _ = choose_best(cells, search["folds"])
    if best is None:
        return [], "no configuration evaluated"
    betas = [b["value"] for b in search["betas"]]
    runs = [trial_dir(out, shared_source(Trial(best.alpha, best.beta, k), betas)) for k in sorted(best.folds)]
    return runs, (f"the CV's best alpha={best.alpha_label} beta={best.beta_label} over {len(runs)} folds "
                  "(optimistic: chosen on these folds)")
