"""The noise law fitted (`search_noise.py --fit`) against the alpha/beta grid, on the same folds.

    python -m benchmarks.fit_vs_grid --fit-dir runs/tune_fit --grid-dir runs/tune_grid
        [--results benchmarks/RESULTS.md] [--no-write]

Reads two finished experiment directories of tune/search_noise.py (same dataset, config and shards; the
script refuses otherwise) and writes one RESULTS section: cross-validated macro-F1 of ADPM at each fold's
fitted law next to the grid's best cell (chosen on the same folds it is averaged over, so optimistic),
the paper's point (alpha 1/6, beta 5) and alpha 0 (isotropic), with the per-fold differences; the cost
of each (trials, wall time); and per fold the fitted law with its bootstrap interval and R².

Wall time: --fit records it per phase (fit_cost.json). The grid does not, so it is measured here from
its trials: the first attempt's start to the last metrics.json written.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from adpm_dist.evaluate import format_mean_std  # noqa: E402
from adpm_dist.tune.consolidate import Cell, choose_best, collect  # noqa: E402
from adpm_dist.tune.experiment import load_search  # noqa: E402
from adpm_dist.tune.fit_law import FIT_FILE  # noqa: E402
from adpm_dist.tune.fit_summary import fold_results  # noqa: E402
from benchmarks.tables import replace_section  # noqa: E402

BEGIN, END = "<!-- fit-vs-grid:begin -->", "<!-- fit-vs-grid:end -->"
HEADING = "## The noise law fitted vs searched"
PAPER_POINT = (1 / 6, 5.0)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fit-dir", required=True, type=Path, help="output of search_noise.py --fit")
    p.add_argument("--grid-dir", required=True, type=Path, help="output of search_noise.py (grid)")
    p.add_argument("--results", default="benchmarks/RESULTS.md")
    p.add_argument("--no-write", action="store_true", help="print the section only")
    return p.parse_args(argv)


def same_experiment(fit: dict, grid: dict) -> None:
    """Refuse to compare searches that did not train the same thing on the same folds."""
    if fit.get("mode") != "fit":
        raise SystemExit(f"--fit-dir: search.json has mode {fit.get('mode')!r}, not 'fit' (run search_noise.py --fit)")
    if grid.get("mode") == "fit":
        raise SystemExit("--grid-dir is a --fit search; pass a grid search")
    for key in ("dataset", "folds", "config", "overrides"):
        if fit.get(key) != grid.get(key):
            raise SystemExit(f"the searches differ in {key}: fit {fit.get(key)!r}, grid {grid.get(key)!r}")
    manifests = [Path(s["shards"]) / "manifest.json" for s in (fit, grid)]
    if all(m.is_file() for m in manifests) and manifests[0].read_bytes() != manifests[1].read_bytes():
        raise SystemExit(f"the searches read different folds: {manifests[0]} and {manifests[1]} differ")


def grid_wall_seconds(out: Path) -> float:
    """First trial start (attempts.jsonl) to the last metrics.json written, over every trial."""
    starts, ends = [], []
    for trial in (out / "trials").iterdir():
        attempts = trial / "attempts.jsonl"
        if attempts.is_file():
            first = json.loads(attempts.read_text().splitlines()[0])["started"]
            starts.append(dt.datetime.strptime(first, "%Y-%m-%d %H:%M:%S").timestamp())
        if (trial / "metrics.json").is_file():
            ends.append((trial / "metrics.json").stat().st_mtime)
    return max(ends) - min(starts) if starts and ends else float("nan")


def fold_f1(cell: Cell) -> dict[int, float]:
    return {k: m["macro_f1"] for k, m in cell.folds.items()}


def score_row(label: str, cell: Cell, trials: str, wall: str) -> str:
    def cells(key: str, prior: bool = False) -> str:
        return format_mean_std(cell.values(key, prior))
    return (f"| {label} | {len(cell.folds)} | {cells('macro_f1')} | {cells('balanced_accuracy')} | "
            f"{cells('macro_f1', prior=True)} | {cells('prior_agreement')} | {trials} | {wall} |")


def difference(a: dict[int, float], b: dict[int, float]) -> str:
    folds = sorted(set(a) & set(b))
    d = [a[k] - b[k] for k in folds]
    return f"{format_mean_std(d)} ({', '.join(f'{x:+.3f}' for x in d)})" if d else "-"


def find_cell(cells: list[Cell], alpha: float, beta: float | None) -> Cell | None:
    return next((c for c in cells if abs(c.alpha - alpha) < 1e-9 and (beta is None or abs(c.beta - beta) < 1e-9)), None)


def law_lines(fits: list[dict]) -> list[str]:
    lines = ["| fold | alpha [interval] | beta [interval] | c [interval] | R² | eq. 14 | verdict |",
             "|---|---|---|---|---|---|---|"]
    for f in fits:
        if "error" in f:
            lines.append(f"| {f['fold']} | no fit: {f['error']} | | | | | |")
            continue
        iv = f["intervals"]
        rng = {k: f"{f[k]:.3g} [{iv[k][0]:.3g}, {iv[k][1]:.3g}]" for k in ("alpha", "beta", "c")}
        eq14 = f"{f['eq14']['noise.formula']}, beta {f['eq14']['noise.beta']:.3g}, alpha {f['eq14']['noise.alpha']:.3g}"
        lines.append(f"| {f['fold']} | {rng['alpha']} | {rng['beta']} | {rng['c']} | {f['r2']:.2f} | {eq14} | "
                     f"{f['verdict']} |")
    return lines


def section(args, argv: list[str]) -> str:
    fit_search, grid_search = load_search(args.fit_dir), load_search(args.grid_dir)
    same_experiment(fit_search, grid_search)
    folds = fit_search["folds"]
    noise_fit = json.loads((args.fit_dir / FIT_FILE).read_text())
    cost = noise_fit.get("cost", {})
    fit_wall = sum(c["wall_s"] for c in cost.values())
    fit_trials = sum(c["trials"] for c in cost.values())
    # phase 2's scores as the search's own tables read them (a fold trained at another law is left out)
    fitted, _ = fold_results(args.fit_dir.resolve(), fit_search, {f["fold"]: f for f in noise_fit["fits"]})
    cells, _ = collect(args.grid_dir.resolve(), grid_search)
    best, complete = choose_best(cells, folds)
    grid_trials = sum((t / "metrics.json").is_file() for t in (args.grid_dir / "trials").iterdir())
    grid_wall = grid_wall_seconds(args.grid_dir)
    iso, paper = find_cell(cells, 0.0, None), find_cell(cells, *PAPER_POINT)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    grid_desc = (f"alpha {{{', '.join(a['label'] for a in grid_search['alphas'])}}} x beta "
                 f"{{{', '.join(b['label'] for b in grid_search['betas'])}}}")
    lines = [f"{dt.datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPUs, load average when written {load}. "
             "Command:", "", "    python -m benchmarks.fit_vs_grid " + shlex.join(argv), "",
             f"Dataset {fit_search['dataset']}, {folds}-fold CV, config `{fit_search['config']}`"
             + (f" with `{' '.join(fit_search['overrides'])}`" if fit_search["overrides"] else "")
             + f". Grid: {grid_desc}. Mean ± sample std over the folds; every row scores fold k once with a "
             "model trained on the other folds; `= own prior`: share of fold k's images on which ADPM predicts "
             "what its own prior predicts.", "",
             "| noise setting | folds | macro-F1 | balanced acc. | prior macro-F1 | = own prior | trials | wall time |",
             "|---|---|---|---|---|---|---|---|",
             score_row("fitted law per fold (`--fit`)", fitted, str(fit_trials), f"{fit_wall / 60:.0f} min")]
    if best is not None:
        lines.append(score_row(f"grid best: alpha {best.alpha_label}, beta {best.beta_label} (chosen on these folds: "
                               f"optimistic{'' if complete else '; incomplete grid'})", best,
                               str(grid_trials), f"{grid_wall / 60:.0f} min (whole grid)"))
    for label, c in (("grid, the paper's point alpha 1/6, beta 5", paper), ("grid, alpha 0 (isotropic)", iso)):
        if c is not None and c is not best:
            lines.append(score_row(label, c, "(in the grid)", ""))
    lines += ["", "Per-fold macro-F1 differences (fitted law minus):", ""]
    for label, c in (("grid best", best), ("the paper's point", paper), ("isotropic", iso)):
        if c is not None and (c is best) == (label == "grid best"):
            lines.append(f"- {label}: {difference(fold_f1(fitted), fold_f1(c))}")
    lines += ["", "The law fitted per fold on the prior network's per-class validation NLL (eq. 7, weighted least "
                  f"squares, {noise_fit['fits'][0].get('n_boot', '?')} bootstrap refits, "
                  f"{noise_fit['fits'][0].get('level', 0.9):.0%} intervals):", ""] + law_lines(noise_fit["fits"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    text = section(args, argv)
    if not args.no_write:
        results = Path(args.results)
        results.write_text(replace_section(results.read_text() if results.is_file() else "", text,
                                           heading=HEADING, markers=(BEGIN, END)))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
