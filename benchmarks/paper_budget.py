"""ADPM at the paper's own budget on digits-LT: does anisotropy change anything once the model is
trained the paper's way?

    python -m benchmarks.paper_budget [--irs 50 100] [--seeds 0 1 2] [--predictions eps y0]
        [--alphas 0 1/6 1/2] [--jobs 1] [--out runs/paper_budget] [--no-run] [key=value ...]

Every run is ADPM with the paper's choices instead of configs/digits_lt.yaml's shrunk ones (PAPER below):
the denoiser's own timm ResNet-18 encoder (not the prior's map), DiffMIC's 40-epoch linear warm-up and
half-cycle cosine over the paper's 1000 epochs, trained until the validation diffusion loss has
plateaued (train.stop_patience: 5 validations, 50 epochs, without a 1 % gain; 1000 is the cap), for
each parameterisation (eps: the paper's; y0) and alpha (0 = isotropic, DiffMIC; 1/6 the paper's; 1/2).
Runs go through benchmarks/quality.py's runner (resumable: re-run the same command; a finished run
trained with other settings is refused). Run it from a clone pinned at one commit, niced.

Table (between the paper-budget markers of --results): test macro-F1, balanced accuracy, head / medium /
tail-third F1 and the agreement with the run's own prior, mean +- std over seeds; the epoch training
stopped at; and per seed the paired difference to the isotropic run of the same parameterisation and
seed (same data order, same prior initialisation), mean +- std. A figure of every run's validation
diffusion loss and macro-F1 against the epoch goes to --plot.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.quality import add_runner_arguments, collect, datasets, run_all  # noqa: E402
from benchmarks.tables import dataset_table, replace_section  # noqa: E402
from adpm_dist.evaluate import format_mean_std, mean_std  # noqa: E402

BEGIN, END = "<!-- paper-budget:begin -->", "<!-- paper-budget:end -->"
HEADING = "## ADPM at the paper's budget"
PAPER = ["method=adpm", "model.encoder=resnet18", "model.encoder_level=2", "train.epochs=1000",
         "train.warmup_epochs=40", "train.val_every=10", "train.stop_patience=5", "train.stop_min_delta=0.01"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--irs", type=float, nargs="+", default=[50])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--predictions", nargs="+", default=["eps", "y0"], choices=["eps", "y0"])
    p.add_argument("--alphas", nargs="+", default=["0", "1/6", "1/2"], help="eq. 14 alpha values (0 = isotropic)")
    p.add_argument("--config", default="configs/digits_lt.yaml")
    p.add_argument("--out", default="runs/paper_budget")
    p.add_argument("--results", default="benchmarks/RESULTS.md")
    p.add_argument("--plot", default="docs/img/paper_budget_curves.png")
    add_runner_arguments(p)
    p.add_argument("--no-run", action="store_true", help="only the table, from the runs that finished")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every run (they win)")
    args = p.parse_args(argv)
    if "0" not in args.alphas:
        p.error("--alphas must include 0: every figure is paired with its isotropic twin")
    return args


def entry_name(prediction: str, alpha: str) -> str:
    return f"{prediction}_alpha_{alpha.replace('/', 'over')}"


def entries(args) -> dict[str, tuple[list[str], str]]:
    """name -> (overrides, label) for every parameterisation x alpha."""
    return {entry_name(pred, a): ([*PAPER, f"diffusion.prediction={pred}", f"noise.alpha={float(Fraction(a))!r}"],
                                  f"{pred}, alpha {a}" + (" (isotropic)" if Fraction(a) == 0 else ""))
            for pred in args.predictions for a in args.alphas}


def paired_lines(args, rows: list[dict]) -> list[str]:
    """Per parameterisation and alpha > 0: the run minus its isotropic twin, seed by seed."""
    by = {(r["dataset"], r["method"], r["seed"]): r for r in rows}
    lines = ["| data | run | seeds | macro-F1 - isotropic | tail F1 - isotropic | per seed (macro-F1) |",
             "|---|---|---|---|---|---|"]
    for name in sorted({r["dataset"] for r in rows}):
        for pred in args.predictions:
            twin = entry_name(pred, "0")
            for a in (a for a in args.alphas if Fraction(a) != 0):
                pairs = [(by[(name, entry_name(pred, a), s)], by[(name, twin, s)]) for s in args.seeds
                         if (name, entry_name(pred, a), s) in by and (name, twin, s) in by]
                if not pairs:
                    continue
                d_f1 = [x["macro_f1"] - y["macro_f1"] for x, y in pairs]
                d_tail = [x["tail_f1"] - y["tail_f1"] for x, y in pairs]
                lines.append(f"| {name} | {pred}, alpha {a} | {len(pairs)} | {format_mean_std(d_f1)} | "
                             f"{format_mean_std(d_tail)} | {', '.join(f'{d:+.3f}' for d in d_f1)} |")
    return lines


def stop_epochs(out: Path, rows: list[dict]) -> dict[tuple[str, str], str]:
    """(dataset, entry) -> 'stop epochs (kept epochs)' over its seeds."""
    found: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        metrics = json.loads((out / r["run_dir"] / "metrics.json").read_text())
        stopped = (metrics["selection"].get("stopped") or {}).get("epoch", len(metrics["history"]))
        found.setdefault((r["dataset"], r["method"]), []).append(f"{stopped} ({metrics['best_epoch']})")
    return {k: ", ".join(v) for k, v in found.items()}


def curves_title(overrides: list[str]) -> str:
    """What the runs were trained to: the command's train.stop_patience (last one wins) overrides PAPER's."""
    patience = [o.split("=", 1)[1] for o in [*PAPER, *overrides] if o.startswith("train.stop_patience=")][-1]
    return ("every run until its validation diffusion loss plateaued" if int(patience) > 0
            else "every run over the whole schedule (no plateau stop)")


def plot_curves(out: Path, rows: list[dict], path: Path, title: str) -> None:
    """Validation diffusion loss (left) and validation macro-F1 (right) against the epoch, every run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, f1_ax) = plt.subplots(1, 2, figsize=(11, 4))
    colours = {}
    for r in rows:
        history = json.loads((out / r["run_dir"] / "metrics.json").read_text())["history"]
        pts = [(h["epoch"], h.get("val_diffusion"), h["val_macro_f1"]) for h in history if "val_macro_f1" in h]
        key = f"{r['dataset']} {r['method']}"
        colour = colours.setdefault(key, f"C{len(colours) % 10}")
        label = key if r["seed"] == min(x["seed"] for x in rows if x["method"] == r["method"]) else None
        loss_ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colour, lw=0.9, label=label)
        f1_ax.plot([p[0] for p in pts], [p[2] for p in pts], color=colour, lw=0.9)
    loss_ax.set(xlabel="epoch", ylabel="validation diffusion loss (eq. 17)", yscale="log")
    f1_ax.set(xlabel="epoch", ylabel="validation macro-F1", ylim=(0, 1))
    loss_ax.legend(fontsize=7)
    fig.suptitle(f"ADPM at the paper's budget: {title}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def block(args, argv: list[str], rows: list[dict], group_lines: dict, out: Path, failed: list[str]) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    stops = stop_epochs(out, rows)
    lines = [f"{dt.datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPUs, load average at the end {load} "
             f"({args.jobs} run(s) at a time). Command:", "", "    python -m benchmarks.paper_budget " + shlex.join(argv),
             "", f"Config {args.config} with the paper's choices: `{' '.join(PAPER)}`. Mean ± sample std over seeds "
             f"{' '.join(map(str, args.seeds))}; `= own prior`: share of test images on which the diffusion predicts "
             "what its own prior predicts.", ""]
    for name, groups in group_lines.items():
        mine = [r for r in rows if r["dataset"] == name]
        lines += [f"### {name}", "", groups, "", dataset_table(mine, list(entries(args)), entries(args)), "",
                  "Stopped at epoch (kept epoch), per seed: "
                  + "; ".join(f"`{m}` {stops[(name, m)]}" for m in entries(args) if (name, m) in stops), ""]
    lines += ["Paired with the isotropic twin (same parameterisation and seed):", "", *paired_lines(args, rows)]
    if failed:
        lines += ["", "Failed runs (not in the table): " + ", ".join(failed)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    out = Path(args.out).resolve()
    args.shards, args.baseline_epochs = None, 0  # what quality.py's runner reads from its own arguments
    table_entries = entries(args)
    args.methods = list(table_entries)
    data = datasets(args, out)
    failed = [] if args.no_run else run_all(args, data, out, entries=table_entries)
    rows, group_lines = collect(args, data, out)
    text = block(args, argv, rows, group_lines, out, failed)
    results = Path(args.results)
    results.write_text(replace_section(results.read_text() if results.is_file() else "", text,
                                       heading=HEADING, markers=(BEGIN, END)))
    if rows and args.plot:
        plot_curves(out, rows, Path(args.plot), curves_title(args.overrides))
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
