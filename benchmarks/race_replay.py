"""A race replayed on a finished study, without training (issue 33): what `--race` would have dropped, what it
would have cost and what it would have recommended, read off a study whose every trial is already trained.

    python -m benchmarks.race_replay STUDY [STUDY ...] [--first-look 1 2] [--test-scores]

Each STUDY is a finished study directory (shared training, as `tune/study.py` runs by default). The replay
runs the real race (adpm_dist/tune/study/race.py) on a scratch copy of the study's plan, and each wave "runs"
by copying the finished trials' results (metrics.json, predictions.csv, cost.json) into it: the race's looks
read exactly what they would have read live, since a trial's results do not depend on which other trials ran
(shared training writes every trial byte for byte as trained alone; RESULTS.md, "What a study costs").
``--first-look`` sets the wave after which the race first looks (the rule's is race.MIN_WAVES); each setting
is one replay. The cost is the CPU-hours of the trials the race ran (their cost.json); the recommendation is
the answer of the raced study, against the finished study's. With ``--test-scores``, from the
``calibration.json`` beside a calibration draw's study (benchmarks/study_calibration.py), the test macro-F1 of the recommendation's recipe and of the test-best
candidate is shown beside it, so a race that drops the test-best, or changes the answer for a worse one,
shows as regret.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

RESULT_FILES = ("metrics.json", "predictions.csv", "cost.json", "config.yaml")


def plan_of(study_dir: Path, scratch: Path):
    """The finished study's plan, as race() reads a study: its trials (search.json), every one to run, each
    trial's config from its own config.yaml."""
    from adpm_dist.config import load_config
    from adpm_dist.tune.experiment import SEARCH_FILE

    search = json.loads((study_dir / SEARCH_FILE).read_text())
    search["output"] = str(scratch)
    (scratch / SEARCH_FILE).write_text(json.dumps(search))
    trials = [SimpleNamespace(**t) for t in search["trials"]]
    return SimpleNamespace(out=scratch, trials=trials, todo=list(trials), folds=search["folds"], seeds=search["seeds"],
                           config_of=lambda t: load_config(study_dir / "trials" / t.id / "config.yaml"))


def replay(study_dir: Path, first_look: int) -> dict:
    """What a race with its first look after ``first_look`` waves does on the finished study: the trials it runs,
    their CPU-hours, its drops and its recommendation."""
    from adpm_dist.tune.study.race import race
    from adpm_dist.tune.study.report import consolidate_study
    from benchmarks.study_cost import measured

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        study = plan_of(study_dir, scratch)
        ran: list[str] = []

        def run_wave(trials):
            for t in trials:
                (scratch / "trials" / t.id).mkdir(parents=True)
                for name in RESULT_FILES:
                    if (study_dir / "trials" / t.id / name).is_file():
                        shutil.copy2(study_dir / "trials" / t.id / name, scratch / "trials" / t.id / name)
                ran.append(t.id)

        raced = race(study, run_wave, say=lambda _: None, first_look=first_look)
        with contextlib.redirect_stdout(io.StringIO()):
            rec = consolidate_study(scratch)["recommendation"]
        # the ran trials' cost.json files are the scratch study's: what the race paid
        return {"first_look": first_look, "trials": len(ran), "cpu_hours": measured(scratch)["cpu_hours"],
                "raced": raced, "recommendation": rec.name if rec else None}


def finished(study_dir: Path) -> dict:
    """The finished study's own CPU-hours and recommendation (nothing raced)."""
    from adpm_dist.tune.study.report import consolidate_study
    from benchmarks.study_cost import measured

    hours = measured(study_dir)["cpu_hours"]
    with tempfile.TemporaryDirectory() as tmp:  # consolidate a copy: the study's own files stay as they are
        copy = Path(tmp) / "study"
        shutil.copytree(study_dir, copy, ignore=shutil.ignore_patterns("checkpoints", "ray_results", "curve*"))
        with contextlib.redirect_stdout(io.StringIO()):
            rec = consolidate_study(copy)["recommendation"]
    return {"cpu_hours": hours, "recommendation": rec.name if rec else None}


def test_scores(path: Path) -> dict[str, float]:
    """Candidate -> its recipe's test macro-F1, from a calibration draw's calibration.json (else empty)."""
    return json.loads(path.read_text()).get("tests", {}) if path.is_file() else {}


def rows(study_dir: Path, first_looks: list[int], tests: dict[str, float]) -> list[str]:
    base = finished(study_dir)
    best = max(tests.values()) if tests else None

    def regret(name):
        return "-" if best is None or name not in tests else f"{best - tests[name]:.3f}"

    out = [f"| {study_dir} | none | {base['cpu_hours']:.3f} (100%) | - | {base['recommendation']} | "
           f"{regret(base['recommendation'])} |"]
    for k in first_looks:
        r = replay(study_dir, k)
        drops = ", ".join(f"{c} (wave {x['wave']})" for c, x in r["raced"].items()) or "-"
        out.append(f"| {study_dir} | after wave {k} | {r['cpu_hours']:.3f} ({r['cpu_hours'] / base['cpu_hours']:.0%}) "
                   f"| {drops} | {r['recommendation']} | {regret(r['recommendation'])} |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("studies", nargs="+", type=Path, help="finished study directories")
    p.add_argument("--first-look", nargs="+", type=int, default=[2], help="waves before the race's first look")
    p.add_argument("--test-scores", action="store_true",
                   help="read each study's recipe test scores from calibration.json beside it (a calibration draw)")
    args = p.parse_args(argv)
    print("| study | race's first look | CPU-hours (of the study) | raced out | recommendation | regret on test |")
    print("|---|---|---:|---|---|---:|")
    for study_dir in args.studies:
        tests = test_scores(study_dir.parent / "calibration.json") if args.test_scores else {}
        for line in rows(study_dir.resolve(), args.first_look, tests):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
