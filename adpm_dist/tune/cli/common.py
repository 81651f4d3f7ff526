"""What every tune command line shares: the runner's arguments (resources, faults, early stopping,
cluster, --dry-run), key=value overrides anywhere on the line, the config lookup, and the objects the
runner takes (search.Resources is built by search.resources_and_shards)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # the repository: configs/<dataset>.yaml are found from anywhere


def add_runner_arguments(p: argparse.ArgumentParser) -> None:
    """The ~20 flags of the runner (search.run_search), the same in every tune CLI."""
    r = p.add_argument_group("resources and fault tolerance")
    r.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per training process (default 1)")
    r.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per training process (whole if workers > 1)")
    r.add_argument("--workers-per-trial", type=int, default=1, help="> 1: Ray Train TorchTrainer with W processes")
    r.add_argument("--max-concurrent", type=int, help="trials at once (default: as the resources allow)")
    r.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial, from its checkpoint (default 2)")
    r.add_argument("--dry-run", action="store_true",
                   help="print the trials, epochs and the estimated CPU/GPU-hours and wall time, then stop")
    r.add_argument("--calibrate", action="store_true",
                   help="price candidates without a recorded trial by a short run each (two epochs on one fold), trained here first")
    e = p.add_argument_group("early stopping")
    e.add_argument("--early-stop", action="store_true", help="ASHA on val_macro_f1, per (fold, seed)")
    e.add_argument("--grace-period", type=int, help="joint epochs (a diffusion method's prior warm-up not counted) "
                                                    "before ASHA may stop a trial (default: train.val_every)")
    e.add_argument("--reduction-factor", type=float, default=3.0, help="ASHA reduction factor (default 3)")
    e.add_argument("--early-stop-scope", choices=["fold", "candidate"],
                   help="fold: ASHA compares every candidate of a (fold, seed), cheapest, may leave a method without "
                        "an estimate (the default); candidate: only one candidate's points, never removes a method")
    c = p.add_argument_group("cluster")
    c.add_argument("--address", help="join a running cluster (auto, ray://host:10001); default: RAY_ADDRESS if set "
                                     "(ray job submit), else start a local cluster on 127.0.0.1")
    c.add_argument("--num-cpus", type=float, help="local cluster: logical CPUs (default: enough for the concurrent trials)")
    c.add_argument("--ray-temp-dir", help="local cluster: Ray's temp/log directory (default /tmp/ray)")
    c.add_argument("--dashboard", action="store_true", help="local cluster: start the dashboard on 127.0.0.1")
    c.add_argument("--dashboard-port", type=int, default=8265)
    c.add_argument("--progress-interval", type=float, default=15.0, help="seconds between progress tables")


def parse_with_overrides(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """parse_args, but key=value words anywhere are overrides (`--betas 5 train.epochs=1` keeps 5 a beta)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    is_override = [("=" in a and not a.startswith("-")) for a in argv]
    args = parser.parse_args([a for a, o in zip(argv, is_override) if not o])
    args.overrides = [a for a, o in zip(argv, is_override) if o] + args.overrides  # the rest fails in load_config
    if args.early_stop_scope and not args.early_stop:
        parser.error("--early-stop-scope needs --early-stop")
    return args


def resolve_config(path: str | None, dataset: str) -> Path:
    given = Path(path or f"configs/{dataset}.yaml")
    for candidate in (given, ROOT / given):
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"config file not found: {given} (pass --config configs/<something>.yaml)")


def cluster_options(args):
    from ..search import cluster_from_args

    return cluster_from_args(args)


def early_stopping(args, base):
    """search.EarlyStopping from --early-stop & co. (None without --early-stop)."""
    from ..search import EarlyStopping

    if not args.early_stop:
        return None
    return EarlyStopping(args.grace_period or base.train.val_every, args.reduction_factor,
                         scope=args.early_stop_scope or "fold")


def run_command(argv: list[str] | None, parse, run, command: str) -> int:
    """A tune command line: parse, run, and on Ctrl-C / SIGTERM the line that says how to continue
    (exit 130 / 143; interrupt.report)."""
    from ..interrupt import Interrupted, report

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return run(parse(argv))
    except Interrupted as e:
        return report(e, command, argv)
