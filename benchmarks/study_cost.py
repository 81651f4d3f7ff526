"""What shared training and racing save (issue 33, "Measured"): the same study full, shared, shared + race.

    python -m benchmarks.study_cost [--sets digits_ir100] [--modes full shared race] [--folds 5] [--seeds 0 1]
        [--space benchmarks/study_cost_space.yaml] [--out runs/study_cost] [--results benchmarks/RESULTS.md]
        [--no-run] [key=value ...]

Per set (benchmarks/study_lt.py's sets and shards) and mode, a study in OUT/<set>/<mode>:
- full: `--no-share`, every trial trains itself;
- shared: the default (a read-out candidate is replayed over its twin's training; docs/tune.md, "Shared
  training");
- race: shared + `--race` (a candidate clearly worse than the leader runs no further fold).
Before a study first runs, its `--dry-run --calibrate` price is kept (price.json: the estimate to check).
Resumable: run the same command again (a study resumes; its wall time adds up over the runs). Then one
RESULTS section over every set in OUT: per mode the CPU-hours (the trials' own CPU time from cost.json,
replays included), the wall time of the study command, the trials trained, the recommendation, and
whether the full study's rule calls it equal to the full study's recommendation; and the dry-run price
against the measured CPU-hours. Run it alone on the machine: wall times are information, CPU-hours the
figure (they move little with load).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

from benchmarks.study_lt import json_keys, shards_for

ROOT = Path(__file__).resolve().parents[1]
MARKERS = ("<!-- study-cost:begin -->", "<!-- study-cost:end -->")
HEADING = "## What a study costs: full, shared, shared + race (issue 33)"
MODES = {"full": ["--no-share"], "shared": [], "race": ["--race"]}
PRICE = re.compile(r"total: (\d+) trials, (\d+) epochs; ([\d.]+) CPU-hours, ([\d.]+) GPU-hours, ~([\d.]+) h wall")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=["digits_ir100"])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--out", default="runs/study_cost")
    p.add_argument("--config", default="configs/digits_lt.yaml")
    p.add_argument("--space", default=str(ROOT / "benchmarks" / "study_cost_space.yaml"))
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    p.add_argument("--no-run", action="store_true", help="only the table, from what has finished")
    p.add_argument("overrides", nargs="*", help="key=value for every trial")
    return p.parse_args(argv)


def study_argv(args, name: str, shards: Path, where: Path) -> list[str]:
    dataset = "digits_lt" if name.startswith("digits") else "imagefolder"
    return ["--dataset", dataset, "--config", args.config, "--shards", str(shards),
            "--methods", ",".join(json_keys(Path(args.space))), "--space", args.space,
            "--seeds", *map(str, args.seeds), "--output", str(where), "--max-concurrent", str(args.max_concurrent),
            "--progress-interval", "300", *args.overrides]


def dry_run_price(argv: list[str], where: Path) -> dict:
    """The price the study prints before it runs (`--dry-run --calibrate`), kept in price.json."""
    from adpm_dist.tune.cli import study

    path = where / "price.json"
    if path.is_file():
        return json.loads(path.read_text())
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        rc = study.main(argv + ["--dry-run", "--calibrate"])
    found = PRICE.search(text.getvalue())
    if rc != 0 or not found:
        raise SystemExit(f"dry run of {where} failed (exit {rc}):\n{text.getvalue()}")
    trials, epochs, cpu_h, gpu_h, wall_h = found.groups()
    price = {"trials": int(trials), "epochs": int(epochs), "cpu_hours": float(cpu_h), "wall_hours": float(wall_h),
             "unpriced": "not priced" in text.getvalue()}
    where.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(price, indent=1))
    return price


def run_mode(args, name: str, mode: str, shards: Path, where: Path) -> int:
    """One study of the set in this mode (resumed if begun), its wall time added to wall.json."""
    from adpm_dist.tune.cli import study

    argv = study_argv(args, name, shards, where) + MODES[mode]
    dry_run_price(argv, where)
    resume = ["--resume"] if (where / "search.json").is_file() else []
    start = time.time()
    rc = study.main(argv + resume)
    wall = where / "wall.json"
    spent = json.loads(wall.read_text())["wall_s"] if wall.is_file() else 0.0
    wall.write_text(json.dumps({"wall_s": spent + time.time() - start}))
    return rc


def measured(where: Path) -> dict:
    """CPU-hours of every trial directory (trained or replayed), trials trained and replayed, wall hours."""
    from adpm_dist.tune.cost import COST_FILE, trial_hours

    cpu_h, trained, replayed = 0.0, 0, 0
    for path in sorted((where / "trials").glob(f"*/{COST_FILE}")):
        cost = json.loads(path.read_text())
        cpu_h += trial_hours(cost)["cpu_hours"]
        replayed, trained = (replayed + 1, trained) if cost.get("replayed_from") else (replayed, trained + 1)
    wall = where / "wall.json"
    return {"cpu_hours": cpu_h, "trained": trained, "replayed": replayed,
            "wall_hours": json.loads(wall.read_text())["wall_s"] / 3600 if wall.is_file() else float("nan")}


def answer(where: Path) -> dict:
    from adpm_dist.tune.study.race import load_raced
    from adpm_dist.tune.study.report import consolidate_study

    with contextlib.redirect_stdout(io.StringIO()):
        report = consolidate_study(where)
    rec = report["recommendation"]
    return {"recommendation": rec.name if rec else None, "partial": bool(report["partial"]),
            "verdicts": {name: d.verdict for name, d in report["decisions"].items()},
            "raced": load_raced(where)}


def trial_costs(where: Path) -> list[tuple[str, int, int, float]]:
    """(candidate, seed, fold, CPU-hours) of every trial of the study in ``where`` (cv_results.csv, cost.json)."""
    import csv

    from adpm_dist.tune.cost import COST_FILE, trial_hours

    found = []
    with open(where / "cv_results.csv", newline="") as f:
        for r in csv.DictReader(f):
            path = where / "trials" / r["trial"] / COST_FILE
            if r["fold"] and path.is_file():
                found.append((r["candidate"], int(r["seed"]), int(r["fold"]),
                              trial_hours(json.loads(path.read_text()))["cpu_hours"]))
    return found


def race_floor(set_dir: Path, recommendation: str) -> float | None:
    """The least CPU-hours any race under the rule could cost (an oracle's race): every candidate's trials of
    the waves before the first look (the first seed's first MIN_WAVES folds; study/race.py runs seed by seed),
    with shared training, then only the full study's recommendation in the other waves (as the full study
    trained it: alone, nothing left to share with)."""
    from adpm_dist.tune.study.race import MIN_WAVES

    # the first waves as shared training trains them: the shared study's, else the race's (nothing is dropped
    # before its first look), else the full study's
    first = next(set_dir / m for m in ("shared", "race", "full") if (set_dir / m / "cv_results.csv").is_file())
    if not (set_dir / "full" / "cv_results.csv").is_file():
        return None
    seed0 = json.loads((set_dir / "full" / "search.json").read_text())["seeds"][0]

    def before_look(seed: int, fold: int) -> bool:
        return seed == seed0 and fold < MIN_WAVES

    early = sum(h for _, seed, fold, h in trial_costs(first) if before_look(seed, fold))
    late = sum(h for c, seed, fold, h in trial_costs(set_dir / "full") if not before_look(seed, fold)
               and c == recommendation)
    return early + late


def row(name: str, mode: str, where: Path, r: dict, full: dict | None) -> str:
    """One table row from ``r`` (measured | answer of the mode's study) beside the full study's."""
    price = json.loads((where / "price.json").read_text()) if (where / "price.json").is_file() else None
    rec = r["recommendation"]
    if full is None or mode == "full":
        same = "-"
    elif rec == full["recommendation"]:
        same = "same"
    else:
        same = f"{full['verdicts'].get(rec, '?')} in the full study"
    share = "" if full is None or mode == "full" else f" ({r['cpu_hours'] / full['cpu_hours']:.0%})"
    raced = ", ".join(f"{c} (after {x['folds']} folds{' of seed %d' % x['seeds'][0] if x.get('seeds') else ''})"
                      for c, x in r["raced"].items()) or "-"
    estimate = "-" if price is None else f"{price['cpu_hours']:.3f} / ~{price['wall_hours']:.2f} h"
    return (f"| {name} | {mode} | {r['trained']} + {r['replayed']} replayed | {r['cpu_hours']:.3f}{share} | "
            f"{r['wall_hours']:.2f} | {estimate} | {rec or '-'}{' (PARTIAL)' if r['partial'] else ''} | {same} | "
            f"{raced} |")


def section(argv: list[str], out: Path) -> str:
    lines = [f"{dt.date.today().isoformat()}, {os.cpu_count()} CPUs, load average at the end "
             f"{os.getloadavg()[0]:.1f}. Command:", "",
             f"    python -m benchmarks.study_cost {shlex.join(argv)}", "",
             "| set | mode | trials trained | CPU-hours (of full) | wall h | dry-run price: CPU-h / wall | "
             "recommendation | vs full | raced out |", "|---|---|---|---:|---:|---|---|---|---|"]
    floors = []
    for where in sorted(p for p in out.iterdir() if p.is_dir()):
        # each study read once (a consolidation per study), then compared with the full one
        found = {mode: measured(where / mode) | answer(where / mode) for mode in MODES
                 if (where / mode / "search.json").is_file()}
        lines += [row(where.name, mode, where / mode, r, found.get("full")) for mode, r in found.items()]
        full = found.get("full")
        floor = race_floor(where, full["recommendation"]) if full and full["recommendation"] else None
        if floor is not None:
            floors.append(f"- {where.name}: {floor:.3f} CPU-hours ({floor / full['cpu_hours']:.0%} of full)")
    if floors:
        lines += ["", "The least any race could cost here (every candidate but the full study's recommendation "
                  "dropped at the first look, after the first waves every candidate must train; an oracle, "
                  "not a rule):", "", *floors]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.tables import write_section

    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    out = Path(args.out).resolve()
    for name in args.sets:
        shards = shards_for(name, out / name, args.folds)
        for mode in args.modes if not args.no_run else []:
            rc = run_mode(args, name, mode, shards, out / name / mode)
            if rc in (130, 143):  # Ctrl-C / SIGTERM: stop here; the same command resumes
                return rc
    block = section(argv, out)
    write_section(args.results, block, HEADING, MARKERS)
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
