"""Which long-tail method, with which settings, for my data? Candidates x folds x seeds as Ray Tune trials.

    python tune/study.py --dataset pad_ufes --root /data/PAD-UFES-20 --folds 5        # every registered method
    python tune/study.py --dataset imagefolder --shards data/mine --methods ce,logit_adjusted,adpm --seeds 0 1
    ray job submit --address http://HEAD:8265 --working-dir . -- python tune/study.py --shards ... (RAY_ADDRESS)
    accelerate launch launch/train.py --config runs/study_mine/recipe.yaml              # train the recommendation

Each candidate is a registered method (with the search space its class declares) or a preset such as
adpm_isotropic; --space FILE.yaml replaces spaces. With a `test` part the CV selects and the recipe's
run on `test` is the figure to publish; fold-only shards get nested CV. Writes study.md, leaderboard.csv,
leaderboard.png, recipe.yaml, cv_results.csv and protocol.json into --output (docs/tune.md, "Studies").
Exit status: 0 complete, 1 a partial estimate (trials failed, skipped or stopped), 2 bad input.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import (add_runner_arguments, cluster_options, early_stopping, parse_with_overrides, resolve_config,
                     run_command)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tune/study.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("what to study")
    g.add_argument("--dataset", required=True, help="digits_lt, pad_ufes, ham10000, scin, hyper_kvasir, imagefolder")
    g.add_argument("--config", help="base training YAML (default: configs/<dataset>.yaml)")
    g.add_argument("--shards", help="fold shards (default: prepared once under OUTPUT/shards)")
    g.add_argument("--root", help="dataset files in their official layout, to prepare OUTPUT/shards from")
    g.add_argument("--methods", help="comma-separated candidates (default: every registered method)")
    g.add_argument("--space", help="YAML: candidate -> {dotted key: [values]}, replacing those candidates' spaces")
    g.add_argument("--folds", type=int, help="CV folds (default: those of --shards, else 5)")
    g.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
    g.add_argument("--output", help="study directory (default: runs/study_<dataset>)")
    g.add_argument("--resume", action="store_true", help="continue: finished trials are not re-run")
    g.add_argument("--consolidate-only", action="store_true", help="only (re)write the study's outputs")
    g.add_argument("--max-trials", type=int, help="run at most N trials now (the rest are written down as skipped)")
    g.add_argument("--budget-hours", type=float,
                   help="plan the seeds whose price fits this many hours of wall time on these resources (fewer "
                        "--seeds, never a study cut mid-way; refused if one seed does not fit)")
    a = p.add_argument_group("the answer (docs/tune.md, 'The estimate', 'Ties the tool can call', 'Racing')")
    a.add_argument("--target-prior", default="balanced",
                   help="the class mix the estimate is for: balanced (a balanced test set; default), train (the "
                        "data's own mix) or a YAML file class -> weight")
    a.add_argument("--equivalence", type=float, default=0.01,
                   help="macro-F1 margin within which a candidate counts as equal to the leader (default 0.01)")
    a.add_argument("--race", action="store_true",
                   help="run fold by fold and drop a candidate once clearly worse than the leader (held-out or nested CV)")
    a.add_argument("--learning-curve", action="store_true",
                   help="then train each candidate's CV trials again on half their images and extrapolate to the "
                        "recipe's data: its expected score and interval (shards with a `test` part; 0.65-0.75x the "
                        "CV trials' CPU time again; docs/tune.md, 'The recipe's expected score')")
    g.add_argument("--keep-checkpoints", action="store_true",
                   help="keep a finished trial's resume checkpoints (by default a study deletes them once the trial "
                        "has finished: best.pt, metrics and predictions stay; docs/tune.md, 'Disk')")
    g.add_argument("--no-share", action="store_true",
                   help="train every trial itself, even one whose training another trial already does (docs/tune.md, "
                        "'Shared training'; to measure what sharing saves)")
    g.add_argument("overrides", nargs="*", help="dotted key=value training overrides for every trial")
    add_runner_arguments(p)
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    args = parse_with_overrides(build_parser(), argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    return args


def main(argv: list[str] | None = None) -> int:
    """Plan, price, run and consolidate a study; the exit status of the module docstring (130/143 when
    interrupted: the line printed then says how to continue)."""
    return run_command(argv, parse_args, run, "tune/study.py")


def run(args: argparse.Namespace) -> int:
    from ...config import ConfigError, load_config
    from ..experiment import SearchSpec
    from ..budget import plan_within_budget
    from ..price import price, show_price
    from ..search import resources_and_shards, run_search
    from ..study.plan import check_study_overrides, plan_study
    from ..study.report import consolidate_study, load_target
    from ..study.shared import run_then_replay
    from ..study.spec import build_candidates

    output = Path(args.output or f"runs/study_{args.dataset}").resolve()
    answer = {"target_prior": args.target_prior, "equivalence": args.equivalence}
    try:
        load_target(args.target_prior)  # a bad file is named now, not after the trials
        if not 0 <= args.equivalence < 1:
            raise ValueError(f"--equivalence {args.equivalence}: expected a macro-F1 margin in [0, 1)")
        if args.consolidate_only:
            return show(consolidate_study(output, **answer))
        config = resolve_config(args.config, args.dataset)
        check_study_overrides(args.overrides)
        base = load_config(config, args.overrides)
        candidates = build_candidates(args.methods, args.space)
        spec = SearchSpec(dataset=args.dataset, config=str(config), output=str(output), folds=args.folds,
                          shards=args.shards, overrides=args.overrides)
        resources, shards, folds = resources_and_shards(args, output, base)
        def plan_for(seeds):
            return plan_study(spec, candidates, shards, folds, seeds, args.resume, args.max_trials, args.budget_hours,
                              share=not args.no_share)

        study = (plan_for(args.seeds) if args.budget_hours is None else plan_within_budget(
            plan_for, args.seeds, args.budget_hours, lambda s: price(s, resources, sys.stdout, calibrate=True)[1],
            args.resume, sys.stdout))
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.learning_curve and study.protocol == "nested":
        from ..study.curve import NEEDS_TEST
        print(f"error: {NEEDS_TEST}", file=sys.stderr)
        return 2
    if args.race:  # a resumed race: what it dropped runs nothing more, so it is not priced either
        from ..study.race import still_racing
        study.todo = still_racing(study)
    per = ", ".join(f"{c.name} {len(c.points())}" for c in candidates)
    print(f"study: {len(study.trials)} trials (points per candidate: {per}; {folds} folds x {len(study.seeds)} "
          f"seed(s){', nested CV (no test part)' if study.protocol == 'nested' else ''}); {len(study.todo)} to run"
          f"{f', {len(study.skipped)} skipped by --max-trials' if study.skipped else ''} -> {output}", flush=True)
    show_price(study, resources, sys.stdout, calibrate=args.calibrate, race_waves=(folds, len(study.seeds)) if args.race else None)
    if args.learning_curve:
        print(f"  with --learning-curve: then one half run per CV trial of each candidate's selected point "
              f"({len(study.seeds) * folds} per candidate; a read-out candidate's replayed over its twin's): "
              "0.65-0.75x the CV trials' CPU time again on the calibration draws (validation and evaluation do "
              "not shrink with the images)", flush=True)
    if args.dry_run:
        return 0
    try:
        if args.race:
            run_raced(study, resources, args, base)
        else:  # shared training: the derived trials are replayed after the Ray trials (study/shared.py)
            run_then_replay(study, study.todo, lambda: run_search(
                study, resources, cluster_options(args), early_stopping(args, base),
                progress_interval=args.progress_interval), replay_threads(resources),
                keep_checkpoints=args.keep_checkpoints)
        if args.learning_curve:
            run_curve(output, resources, args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return show(consolidate_study(output, **answer))


def run_raced(study, resources, args, base) -> None:
    """--race: the study's trials wave by wave (one seed's fold each; the waves between two looks as one batch) on
    one cluster; the clearly worse drop out."""
    from ..search import ray_cluster, run_search
    from ..study.race import batch_text, race
    from ..study.shared import run_then_replay

    def run_wave(trials):
        print(f"race: {batch_text(trials)} ({len(trials)} trials; {len(study.trials)} in the study)", flush=True)
        run_then_replay(study, trials, lambda: run_search(
            study, resources, cluster_options(args), early_stopping(args, base),
            progress_interval=args.progress_interval, connected=True), replay_threads(resources),
            keep_checkpoints=args.keep_checkpoints)

    with ray_cluster(cluster_options(args), resources, len(study.todo)):
        race(study, run_wave, prior=args.target_prior, eps=args.equivalence)


def run_curve(output: Path, resources, args) -> None:
    """--learning-curve: the half runs of every complete candidate's CV trials (study/curve.py), as a batch;
    a read-out candidate's half runs replayed over its training twin's (study/shared.py)."""
    import os

    from ..batch import run_batch
    from ..experiment import load_search
    from ..price import at_once
    from ..release import delete, release_runs
    from ..study.curve import CURVE_DIR, curve_runs, share_half_runs
    from ..study.results import read_estimates
    from ..study.shared import has_validated, replay_runs
    from ...runtime.checkpoint import VALIDATED

    search = load_search(output)  # the selected points, read back without writing the answer twice
    runs = curve_runs(output, search, read_estimates(output, search)[2])
    if not runs:
        return
    train, replays = share_half_runs(runs)
    print(f"learning curve: {len(runs)} half run(s) (data.train_share), {len(replays)} of them replayed over a "
          f"twin's -> {output / CURVE_DIR}", flush=True)
    if train:
        run_batch(output / f"{CURVE_DIR}_batch", train, jobs=at_once(resources, os.cpu_count() or 1),
                  cpus_per_run=resources.cpus_per_trial, gpus_per_run=resources.gpus_per_trial,
                  address=cluster_options(args).address)
    ready = [j for j in replays if has_validated(j.source)]  # a failed source: the next run trains them
    replay_runs(ready, replay_threads(resources))
    delete([r.run_dir / "checkpoints" / VALIDATED for r in train if (r.run_dir / "metrics.json").is_file()])
    if not args.keep_checkpoints:  # as the study's own trials: predictions and best.pt are what stays
        release_runs([r.run_dir for r in runs])


def replay_threads(resources) -> int:
    """The torch threads a replay runs with in the driver: those Ray gives a trial (OMP_NUM_THREADS)."""
    return max(1, int(resources.cpus_per_trial))


def show(report: dict) -> int:
    for r in report["rows"]:
        print(f"{r['rank']:>2}. {r['candidate']:<20} macro-F1 {r['estimate']:.3f} [{r['estimate_low']:.3f}, "
              f"{r['estimate_high']:.3f}] ({r['evaluated']})  vs leader {r['vs_leader']} {r['verdict']}  "
              f"selected {r['selected']}")
    rec = report["recommendation"]
    print(f"recommendation: {rec.name if rec else 'none'}")
    for w in report["warnings"]:
        print(f"warning: {w}")
    print("wrote " + ", ".join(str(p) for p in report["written"]))
    if report["partial"]:
        print(f"PARTIAL ESTIMATE, not a figure to publish: {'; '.join(report['partial'])}. Run the missing trials "
              f"(--resume) and consolidate again.", file=sys.stderr)
        return 1
    return 0
