"""What checkpoint selection costs when validation data is tiny: every rule (train.select) on
digits-LT, with the balanced `val` part and with the carve-out of the training parts.

    python -m benchmarks.selection [--irs 50 100] [--seeds 0 1 2] [--methods adpm ce logit_adjusted ...]
        [--sources val carve] [--refit ce logit_adjusted balanced_softmax] [--jobs 1] [--out runs/selection]

1. Runs (benchmarks/quality.py's runner, resumable, one directory per entry): each (method,
   source) trains once with ``train.select=best`` and ``train.keep_last=true``: its metrics.json is
   the `best` figure, and checkpoints/last.pt, evaluated here on the same test part with the same
   sampling seed, the `last` figure. ``--refit`` methods also train with ``train.select=refit``.
   Sources: ``val`` (digits-LT's balanced 10-per-class part) and ``carve`` (``data.val_part=carve``:
   the tail-protecting carve-out, what every other dataset uses).
2. Table: test macro-F1 (mean ± std over seeds) per method, source and rule, and the spread
   between rules (the largest minus the smallest mean), written between the selection markers of
   --results. Never tuned on the test part: every rule is fixed before any figure is read.
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

from benchmarks.quality import add_runner_arguments, datasets, run_all  # noqa: E402
from benchmarks.tables import METHODS, replace_section  # noqa: E402
from adpm_dist.evaluate import format_mean_std, mean_std  # noqa: E402

BEGIN, END = "<!-- selection:begin -->", "<!-- selection:end -->"
HEADING = "## Model selection on tiny validation data"
LAST_FILE = "last_metrics.json"
SOURCES = {"val": "data.val_part=auto", "carve": "data.val_part=carve"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--irs", type=float, nargs="+", default=[50, 100])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["ce", "logit_adjusted", "balanced_softmax", "adpm", "isotropic"],
                   choices=list(METHODS))
    p.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    p.add_argument("--refit", nargs="*", default=["ce", "logit_adjusted", "balanced_softmax"],
                   help="methods that also run train.select=refit (a second training each)")
    p.add_argument("--config", default="configs/digits_lt.yaml")
    p.add_argument("--out", default="runs/selection")
    p.add_argument("--results", default="benchmarks/RESULTS.md")
    add_runner_arguments(p)
    p.add_argument("--no-run", action="store_true", help="only the table, from the runs that finished")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    return p.parse_args(argv)


def entries(args) -> dict[str, tuple[list[str], str]]:
    """name -> (overrides, label): method x source x {best (+ last.pt), refit}."""
    out = {}
    for method in args.methods:
        overrides, label = METHODS[method]
        for source in args.sources:
            out[f"{method}-{source}-best"] = ([*overrides, SOURCES[source], "train.select=best", "train.keep_last=true"],
                                             f"{label}, {source}")
            if method in args.refit:
                out[f"{method}-{source}-refit"] = ([*overrides, SOURCES[source], "train.select=refit"],
                                                   f"{label}, {source}, refit")
    return out


def evaluate_last(run_dir: Path) -> dict | None:
    """Test metrics of checkpoints/last.pt: the part, sampling seed and code of the run's own final
    evaluation (so `best` and `last` differ only in the weights)."""
    cached = run_dir / LAST_FILE
    if cached.is_file():
        return json.loads(cached.read_text())
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        return None
    from accelerate import Accelerator

    from adpm_dist.data.manifest import load_manifest
    from adpm_dist.data.stream import eval_batches
    from adpm_dist.data.transforms import build_transform
    from adpm_dist.files import atomic_write_json
    from adpm_dist.methods import method_for
    from adpm_dist.predict import load_model
    from adpm_dist.runtime.sampling import predict, score

    loaded = load_model(run_dir / "checkpoints" / "last.pt", device="cpu")
    cfg, acc = loaded.cfg, Accelerator(cpu=True)
    manifest = load_manifest(cfg.data.shards)
    batches = eval_batches(manifest, [cfg.data.eval_part], cfg.train.eval_batch_size,
                           build_transform(cfg.data.image_size, train=False))
    metrics = score(predict(method_for(cfg), loaded.model, batches, acc, cfg.run.seed + 1, "last epoch"),
                    loaded.class_names)
    atomic_write_json(cached, metrics)
    return metrics


def figures(args, data: dict[str, Path], out: Path) -> dict[tuple[str, str, str, str], list[float]]:
    """(dataset, method, source, rule) -> test macro-F1 per seed."""
    found: dict[tuple[str, str, str, str], list[float]] = {}
    for name in data:
        for entry in entries(args):
            method, source, rule = entry.rsplit("-", 2)
            for seed in args.seeds:
                run_dir = out / "runs" / name / entry / f"seed{seed}"
                if not (run_dir / "metrics.json").is_file():
                    continue
                metrics = json.loads((run_dir / "metrics.json").read_text())
                found.setdefault((name, method, source, rule), []).append(metrics["macro_f1"])
                if rule == "best" and (last := evaluate_last(run_dir)) is not None:
                    found.setdefault((name, method, source, "last"), []).append(last["macro_f1"])
    return found


def table(args, data: dict[str, Path], found: dict) -> list[str]:
    cols = [(s, r) for s in args.sources for r in ("best", "last", "refit")]
    lines = []
    for name in data:
        lines += [f"### {name}", "", "| method | " + " | ".join(f"{s} / {r}" for s, r in cols)
                  + "".join(f" | spread between rules ({s})" for s in args.sources) + " |",
                  "|---" * (len(cols) + len(args.sources) + 1) + "|"]
        for method in args.methods:
            cells = [format_mean_std(found.get((name, method, s, r), []), missing="-") for s, r in cols]
            spreads = []
            for source in args.sources:
                means = [mean_std(found[(name, method, source, r)])[0] for r in ("best", "last", "refit")
                         if found.get((name, method, source, r))]
                spreads.append(f"{max(means) - min(means):.3f}" if len(means) > 1 else "-")
            lines.append(f"| `{method}` | " + " | ".join(cells) + " | " + " | ".join(spreads) + " |")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    out = Path(args.out).resolve()
    args.shards, args.baseline_epochs = None, 0  # what quality.py's runner reads from its own arguments
    data = datasets(args, out) if not args.no_run else {f"digits_lt_ir{ir:g}": out / "data" / f"digits_lt_ir{ir:g}"
                                                         for ir in args.irs}
    all_entries = entries(args)
    args.methods, methods = list(all_entries), args.methods
    failed = [] if args.no_run else run_all(args, data, out, entries=all_entries)
    args.methods = methods
    found = figures(args, data, out)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    block = [f"{dt.datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPUs, load average at the end {load}. Command:", "",
             "    python -m benchmarks.selection " + shlex.join(argv), "",
             "Test macro-F1, mean ± sample std over the seeds that finished; `best`: the best validation macro-F1 "
             "(ties to the lower validation NLL), `last`: the last epoch of the same run, `refit`: the best epoch "
             "count, retrained on training + validation data. `-`: not run.", "",
             *table(args, data, found), *([f"failed runs: {', '.join(failed)}", ""] if failed else [])]
    results = Path(args.results)
    results.write_text(replace_section(results.read_text() if results.is_file() else "", "\n".join(block),
                                       heading=HEADING, markers=(BEGIN, END)))
    print("\n".join(table(args, data, found)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
