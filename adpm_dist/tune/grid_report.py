"""The grid evaluator's tables and figure: Table 2 layout, every configuration, the nested estimate,
the per-class sections, heatmap.png. Text only: consolidate.py decides what goes in.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .cells import HEADLINE, NAMES, Cell, OuterFold, class_names_of, nested_estimate, per_class_table, pm, protocol_of
from .study.spec import isotropic
from .protocol import NESTED


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


