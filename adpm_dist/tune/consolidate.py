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

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..evaluate import format_pm as pm  # noqa: F401 (pm: the tables' cell, also imported by the CLI)
from ..evaluate import mean_std
from .experiment import load_search, shard_parts, trial_dir
from .grid import Trial, isotropic, shared_source
from .protocol import HELD_OUT, NESTED, checkpoint_selection_parts, entry, mean_entry, write_protocol

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
        values = [(m["prior"] if prior else m).get(key) for _, m in sorted(self.folds.items())]
        return np.array([v for v in values if v is not None], dtype=float)  # older runs lack prior_agreement

    def mean(self, key: str, prior: bool = False) -> float:
        return mean_std(self.values(key, prior))[0]

    def std(self, key: str, prior: bool = False) -> float:
        return mean_std(self.values(key, prior))[1]  # sample std over folds

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


def protocol_of(search: dict) -> str:
    return search.get("protocol", HELD_OUT)  # searches written before nested CV existed had a test part


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
                metrics = json.loads((run_dir / "metrics.json").read_text()) if status == "done" else None
                if metrics is not None:
                    cell.folds[k] = metrics
                rows.append(result_row(cell, k, source, status, metrics))
            cells.append(cell)
    return cells, rows


def result_row(cell: Cell, fold: int, source: Trial, status: str, metrics: dict | None) -> dict:
    row = {"outer": "" if source.outer is None else source.outer,
           "alpha": cell.alpha, "alpha_label": cell.alpha_label, "beta": cell.beta, "beta_label": cell.beta_label,
           "fold": fold, "eval_part": f"fold{fold}", "status": status, "source_trial": source.id}
    if metrics is None:
        return row
    row |= {k: metrics[k] for k in HEADLINE}
    row |= {f"prior_{k}": metrics["prior"][k] for k in HEADLINE}
    row |= {"n_samples": metrics["n_samples"], "best_epoch": metrics.get("best_epoch"),
            "val_macro_f1": metrics.get("val_macro_f1"), "prior_agreement": metrics.get("prior_agreement")}
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


@dataclass
class OuterFold:
    """Nested CV, outer fold k: the point the inner CV chose and its one evaluation on fold k."""
    fold: int
    choice: Cell | None          # best cell of the inner CV over the other folds
    inner_complete: bool         # the choice was among points with every inner fold finished
    source: Trial | None         # the CV trial that trained the choice without fold k and scored it on fold k
    status: str
    metrics: dict | None


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
        metrics = json.loads((trial_dir(out, source) / "metrics.json").read_text()) if status == "done" else None
        outer_folds.append(OuterFold(k, choice, complete, source, status, metrics))
    return outer_folds, rows


def nested_estimate(outer_folds: list[OuterFold]) -> Cell:
    """The outer folds' scores as one Cell (mean, std, per class over outer folds); its (alpha, beta) vary."""
    return Cell(math.nan, math.nan, "selected per outer fold", "", {o.fold: o.metrics for o in outer_folds if o.metrics})


def write_csv(path: Path, rows: list[dict]) -> None:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)


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
        cols = [name, f"{train_n:.0f}", f"{lam:.3f}", str(support), pm(*mean_std(f1)), pm(*mean_std(rec))]
        if baseline is not None and baseline.folds:
            b = baseline.per_class("f1", name)
            cols.append(pm(*mean_std(b)))
        p = best.per_class("f1", name, prior=True)
        cols.append(pm(*mean_std(p)))
        lines.append("| " + " | ".join(cols) + " |")
    return lines


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
    from ..report.plots import anchored_range

    fig = Figure(figsize=(3.5 + 0.7 * len(betas), 1.8 + 0.6 * len(alphas)), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    masked = np.ma.masked_invalid(grid)
    # a scale at least 0.05 macro-F1 wide: cells equal to the third decimal look equal, not opposite
    vmin, vmax = anchored_range(grid)
    im = ax.imshow(masked, cmap="viridis", aspect="auto", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(betas)), [b["label"] for b in betas])
    ax.set_yticks(range(len(alphas)), [a["label"] for a in alphas])
    ax.set_xlabel("beta")
    ax.set_ylabel("alpha")
    kind = "selection table (optimistic), " if protocol_of(search) == NESTED else ""
    ax.set_title(f"{kind}mean macro-F1 over {search['folds']} folds ({search['dataset']})\n(k/N): folds with results",
                 fontsize=8)  # two lines: one is wider than a small grid and was cropped
    light = vmin + 0.65 * (vmax - vmin)  # viridis turns light about here: black text above, white below
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            v, n = grid[i, j], len(by[(a["value"], b["value"])].folds)
            text = "-" if np.isnan(v) else f"{v:.3f}" + ("" if n == search["folds"] else f"\n({n}/{search['folds']})")
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="black" if np.isfinite(v) and v > light else "white")
    if best is not None:
        i = [a["value"] for a in alphas].index(best.alpha)
        j = [b["value"] for b in betas].index(best.beta)
        ax.add_patch(_rect(j, i))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="mean macro-F1")
    fig.savefig(path)


def _rect(x: int, y: int):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2)


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
    path.write_text("\n".join(header) + "\n" + yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def summary_markdown(search: dict, cells: list[Cell], best: Cell | None, complete: bool, rows: list[dict],
                     outer_folds: list[OuterFold] | None = None) -> str:
    """summary.md: the held-out protocol's CV tables, or (outer_folds given) the nested estimate first."""
    folds = search["folds"]
    alpha0 = [c for c in cells if isotropic(c.alpha)]
    betas = search["betas"]
    nested = outer_folds is not None
    title = f"nested {folds}-fold cross-validation" if nested else f"{folds}-fold cross-validation"
    lines = [f"# Noise search on {search['dataset']}: {title}", "",
             f"- config: `{search['config']}`" + (f" with `{' '.join(search['overrides'])}`" if search["overrides"] else ""),
             f"- shards: `{search['shards']}`",
             f"- grid: alpha in {{{', '.join(a['label'] for a in search['alphas'])}}}, "
             f"beta in {{{', '.join(b['label'] for b in betas)}}}; {len(search['trials'])} trials trained",
             f"- consolidated: {time.strftime('%Y-%m-%d %H:%M:%S')}", "",
             "## Protocol", ""]
    lines += nested_protocol_text(folds) if nested else held_out_protocol_text(folds)
    if alpha0 and len(betas) > 1:
        lines += [f"alpha = 0 gives lambda_j = 1 for every class and every beta (isotropic DiffMIC noise): only "
                  f"beta = {betas[0]['label']} was trained and its results fill the whole alpha = 0 row "
                  "(the paper's Table 2 row alpha = 0 is constant too).", ""]
    names = class_names_of(cells)
    if nested:
        lines += nested_section(outer_folds, names)
        lines += [f"## Cross-validated selection table (optimistic): macro-F1, mean ± std over {folds} folds", "",
                  "Each cell is one fixed (alpha, beta), trained without fold k and scored on fold k. The bold cell "
                  "is the configuration best.yaml carries; it was picked on these same folds, so its mean is biased "
                  "upward and is not an estimate of how it does on new data (the nested estimate above is).", ""]
    else:
        lines += [f"## Macro-F1, mean ± std over {folds} folds (Table 2 layout)", ""]
    lines += table2(cells, search, best)
    lines += ["", "std is the sample standard deviation over folds; (k/N): only k of N folds have results.", ""]
    lines += every_configuration(cells, folds, nested)
    lines += best_sections(cells, best, alpha0, names, complete, nested)
    lines += missing_cells(rows)
    return "\n".join(lines) + "\n"


def every_configuration(cells: list[Cell], folds: int, nested: bool) -> list[str]:
    lines = ["## Every configuration" + (" (selection table)" if nested else ""), "",
             "| alpha | beta | folds | " + " | ".join(NAMES[k] for k in HEADLINE)
             + " | prior macro-F1 | prior accuracy | = own prior |",
             "|---|---|---|" + "---|" * (len(HEADLINE) + 3)]
    for c in cells:
        if c.folds:
            lines.append(f"| {c.alpha_label} | {c.beta_label} | {len(c.folds)}/{folds} | "
                         + " | ".join(pm(c.mean(k), c.std(k)) for k in HEADLINE)
                         + f" | {pm(c.mean('macro_f1', True), c.std('macro_f1', True))}"
                         + f" | {pm(c.mean('accuracy', True), c.std('accuracy', True))}"
                         + f" | {pm(c.mean('prior_agreement'), c.std('prior_agreement'))} |")
    return lines


def best_sections(cells: list[Cell], best: Cell | None, alpha0: list[Cell], names: list[str], complete: bool,
                  nested: bool) -> list[str]:
    """The winning cell per class (not for nested: its pick is optimistic) and every cell's per-class F1."""
    lines = []
    if best is not None and not nested:  # nested: a per-class table of the optimistic pick would be published by mistake
        lines += ["", f"## Best: alpha = {best.alpha_label}, beta = {best.beta_label} "
                      f"(mean macro-F1 {pm(best.mean('macro_f1'), best.std('macro_f1'), digits=4)}"
                      + ("" if complete else ", incomplete: no configuration finished every fold") + ")", "",
                  "Per class, mean ± std over folds (Tables 5/7 layout); accuracy per class = recall; train n and "
                  "lambda_j averaged over folds.", ""]
        baseline = next((c for c in alpha0 if c.folds), None) if not isotropic(best.alpha) else None
        lines += per_class_table(best, baseline, names)
    if best is not None:
        lines += ["", "<details><summary>Per-class mean F1 of every configuration</summary>", "",
                  "| alpha | beta | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for c in cells:
            if c.folds:
                lines.append(f"| {c.alpha_label} | {c.beta_label} | "
                             + " | ".join(f"{c.per_class('f1', n).mean():.3f}" for n in names) + " |")
        lines += ["", "</details>"]
    return lines


def missing_cells(rows: list[dict]) -> list[str]:
    missing = [r for r in rows if r["status"] != "done"]
    if not missing:
        return []
    return ["", "## Cells without results", "", "| outer fold | alpha | beta | fold | status | trial |",
            "|---|---|---|---|---|---|"] + [
        f"| {'-' if r['outer'] == '' else r['outer']} | {r['alpha_label']} | {r['beta_label']} | {r['fold']} "
        f"| {r['status']} | {r['source_trial']} |" for r in missing]


def held_out_protocol_text(folds: int) -> list[str]:
    return [f"Each trial (alpha, beta, fold k) trains on the other {folds - 1} fold(s), selects its checkpoint on "
            "validation data (`data.val_part`: the shards' `val` part, else a carve-out of those training folds), and "
            "is evaluated once on fold k. "
            "**The best (alpha, beta) is chosen by the mean macro-F1 over the CV folds' evaluation parts, as the "
            "paper does** (its Table 2); selecting on the evaluation folds makes the winner's CV mean optimistically "
            "biased. The fixed `test` part is never used by the search; `best.yaml` evaluates on it. "
            "`protocol.json` lists every figure with the parts it was selected and evaluated on.", ""]


def nested_protocol_text(folds: int) -> list[str]:
    return [f"The shards have no `test` part, so every fold is read by the search and the estimate comes from "
            f"**nested cross-validation**. For each outer fold k, the grid is cross-validated on the other "
            f"{folds - 1} folds only (inner trials `outer<k>_...`: train on {folds - 2} of them, score the remaining "
            "one); the (alpha, beta) with the best inner mean macro-F1 is trained on all folds but k and scored "
            "once on fold k. Fold k never influences the choice it scores. **The mean ± std of those outer scores "
            "is the estimate to publish.** Every trial selects its checkpoint on validation data (`data.val_part`: "
            "the shards' `val` part, else a carve-out of its own training folds), never on its evaluation fold. "
            "The paper-style table further down is a cross-validated selection table: its best cell is optimistic. "
            "`protocol.json` lists every figure with the parts it was selected and evaluated on.", ""]


def nested_section(outer_folds: list[OuterFold], names: list[str]) -> list[str]:
    """The nested estimate: one row per outer fold, their mean ± std, and per-class figures."""
    estimate = nested_estimate(outer_folds)
    lines = [f"## Estimate: nested CV, mean ± std over {len(estimate.folds)}/{len(outer_folds)} outer folds", "",
             "| outer fold | selected alpha | selected beta | " + " | ".join(NAMES[k] for k in HEADLINE)
             + " | prior macro-F1 | trial |", "|---|---|---|" + "---|" * (len(HEADLINE) + 2)]
    for o in outer_folds:
        alpha, beta = (o.choice.alpha_label, o.choice.beta_label) if o.choice else ("-", "-")
        if o.choice is not None and not o.inner_complete:
            beta += " (inner CV incomplete)"
        scores = [f"{o.metrics[k]:.3f}" for k in HEADLINE] + [f"{o.metrics['prior']['macro_f1']:.3f}"] if o.metrics \
            else [o.status] + ["-"] * len(HEADLINE)
        lines.append(f"| {o.fold} | {alpha} | {beta} | " + " | ".join(scores)
                     + f" | {o.source.id if o.source else '-'} |")
    lines.append("| **mean ± std** | | | " + " | ".join(f"**{pm(estimate.mean(k), estimate.std(k))}**" for k in HEADLINE)
                 + f" | {pm(estimate.mean('macro_f1', True), estimate.std('macro_f1', True))} | |")
    lines += ["", "std is the sample standard deviation over outer folds. Each outer fold may select another "
                  "(alpha, beta): the estimate is of the whole procedure (search, then train), not of one point.", ""]
    if estimate.folds and names:
        lines += ["### Per class, nested estimate", "",
                  "Mean ± std over outer folds; accuracy per class = recall; train n and lambda_j averaged over the "
                  "outer folds' selected points.", ""]
        lines += per_class_table(estimate, None, names)
        lines.append("")
    return lines


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
    if search.get("mode") == "fit":  # --fit: one fitted law per fold, not a grid (fit_summary.py)
        from .fit_summary import consolidate_fit

        return consolidate_fit(out)
    cells, rows = collect(out, search)
    best, complete = choose_best(cells, search["folds"])
    outer_folds, estimate = None, None
    if protocol_of(search) == NESTED:
        outer_folds, inner_rows = nested_folds(out, search)
        rows += inner_rows
        estimate = nested_estimate(outer_folds)
    write_csv(out / "cv_results.csv", rows)
    (out / "summary.md").write_text(summary_markdown(search, cells, best, complete, rows, outer_folds))
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
            "outer_folds": outer_folds, "estimate": estimate,
            "missing": [r for r in rows if r["status"] != "done"]}
