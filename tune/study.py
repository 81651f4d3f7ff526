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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tune"))
from search_noise import resolve_config  # noqa: E402  (the same config lookup as the noise search)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    g.add_argument("--budget-hours", type=float, help="stop the trials after this many hours (Tune time budget; --resume continues)")
    g.add_argument("--target-prior", default="balanced",
                   help="the class mix the estimate is for: balanced (a balanced test set; default), train (the "
                        "data's own mix) or a YAML file class -> weight (docs/tune.md, 'The estimate')")
    g.add_argument("--equivalence", type=float, default=0.01,
                   help="macro-F1 margin within which a candidate counts as equal to the leader (default 0.01)")
    g.add_argument("overrides", nargs="*", help="dotted key=value training overrides for every trial")
    r = p.add_argument_group("resources, faults, early stopping, cluster (as tune/search_noise.py)")
    r.add_argument("--cpus-per-trial", type=float, default=1.0)
    r.add_argument("--gpus-per-trial", type=float, default=0.0)
    r.add_argument("--workers-per-trial", type=int, default=1)
    r.add_argument("--max-concurrent", type=int)
    r.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial, from its checkpoint")
    r.add_argument("--early-stop", action="store_true", help="ASHA on val_macro_f1 per (fold, seed)")
    r.add_argument("--grace-period", type=int,
                   help="joint epochs (a diffusion method's prior warm-up not counted) before ASHA may stop a trial (default: train.val_every)")
    r.add_argument("--reduction-factor", type=float, default=3.0)
    r.add_argument("--early-stop-scope", choices=["fold", "candidate"],
                   help="fold: ASHA compares every candidate of a (fold, seed), cheapest, may leave a method without "
                        "an estimate (the default); candidate: only one candidate's points, never removes a method")
    r.add_argument("--address", help="join a cluster (default: RAY_ADDRESS if set, else a local one on 127.0.0.1)")
    r.add_argument("--num-cpus", type=float)
    r.add_argument("--ray-temp-dir")
    r.add_argument("--dashboard", action="store_true")
    r.add_argument("--dashboard-port", type=int, default=8265)
    r.add_argument("--progress-interval", type=float, default=15.0)
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else list(argv)
    is_override = [("=" in a and not a.startswith("-")) for a in argv]
    args = build_parser().parse_args([a for a, o in zip(argv, is_override) if not o])
    args.overrides = [a for a, o in zip(argv, is_override) if o] + args.overrides
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    if args.early_stop_scope and not args.early_stop:
        build_parser().error("--early-stop-scope needs --early-stop")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from adpm_dist.config import ConfigError, load_config
    from adpm_dist.tune.experiment import SearchSpec
    from adpm_dist.tune.search import ClusterOptions, EarlyStopping, resources_and_shards, run_search
    from adpm_dist.tune.study.plan import check_study_overrides, plan_study
    from adpm_dist.tune.study.report import consolidate_study, load_target
    from adpm_dist.tune.study.spec import build_candidates

    output = Path(args.output or f"runs/study_{args.dataset}").resolve()
    try:
        load_target(args.target_prior)  # a bad file is named now, not after the trials
        if args.consolidate_only:
            return show(consolidate_study(output, target_prior=args.target_prior, equivalence=args.equivalence))
        config = resolve_config(args.config, args.dataset)
        check_study_overrides(args.overrides)
        base = load_config(config, args.overrides)
        candidates = build_candidates(args.methods, args.space)
        spec = SearchSpec(dataset=args.dataset, config=str(config), output=str(output), alphas=[], betas=[],
                          folds=args.folds, shards=args.shards, overrides=args.overrides)
        resources, shards, folds = resources_and_shards(args, output, base)
        study = plan_study(spec, candidates, shards, folds, args.seeds, args.resume, args.max_trials, args.budget_hours)
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    early = None
    if args.early_stop:
        early = EarlyStopping(args.grace_period or base.train.val_every, args.reduction_factor,
                              scope=args.early_stop_scope or "fold")
    cluster = ClusterOptions(address=args.address, num_cpus=args.num_cpus, temp_dir=args.ray_temp_dir,
                             dashboard=args.dashboard, dashboard_port=args.dashboard_port)
    per = ", ".join(f"{c.name} {len(c.points())}" for c in candidates)
    print(f"study: {len(study.trials)} trials (points per candidate: {per}; {folds} folds x {len(study.seeds)} "
          f"seed(s){', nested CV (no test part)' if study.protocol == 'nested' else ''}); {len(study.todo)} to run"
          f"{f', {len(study.skipped)} skipped by --max-trials' if study.skipped else ''} -> {output}", flush=True)
    try:
        run_search(study, resources, cluster, early, progress_interval=args.progress_interval,
                   time_budget_s=args.budget_hours * 3600 if args.budget_hours else None)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return show(consolidate_study(output, target_prior=args.target_prior, equivalence=args.equivalence))


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


if __name__ == "__main__":
    sys.exit(main())
