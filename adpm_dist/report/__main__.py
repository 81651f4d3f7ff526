"""`python -m adpm_dist.report {show,compare,tsne}`: thin CLI over adpm_dist.report.

  show RUN                       (re)write RUN/report.md and its PNGs, print the report
  compare RUN_OR_EXPERIMENT ...  [--label L ...] [--out comparison.md] [--no-prior]
  tsne --run RUN [--run RUN2 ...] [--out PNG] [--per-class 50] [--steps 249,124,0] [--part P]
       [--shards DIR] [--device cpu|cuda] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys

from . import compare, write_report


def _positions(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated chain positions, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m adpm_dist.report", description="Run reports, comparisons, t-SNE.")
    sub = p.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="(re)write RUN/report.md and its figures, then print it")
    show.add_argument("run")
    cmp_ = sub.add_parser("compare", help="paper-style tables over runs / experiments (mean ± std over runs)")
    cmp_.add_argument("paths", nargs="+", help="run directories, or experiment directories holding runs")
    cmp_.add_argument("--label", action="append", default=None, help="method label, one per path, in order")
    cmp_.add_argument("--out", default="comparison.md", help="markdown file to write (default: comparison.md)")
    cmp_.add_argument("--no-prior", action="store_true", help="leave out the prior-network rows")
    tsne = sub.add_parser("tsne", help="t-SNE of the denoised label vectors along the reverse chain")
    tsne.add_argument("--run", action="append", required=True, help="run directory (repeat for one row per run)")
    tsne.add_argument("--out", default=None, help="PNG to write (default: RUN/tsne.png for a single run)")
    tsne.add_argument("--per-class", type=int, default=50, help="evaluation images per class (default 50)")
    tsne.add_argument("--steps", type=_positions, default=None,
                      help="chain positions to show, e.g. 249,124,0 (default: 5 spread over the chain)")
    tsne.add_argument("--part", default=None, help="data part (default: the run's data.eval_part)")
    tsne.add_argument("--shards", default=None, help="shard directory (default: the run's data.shards)")
    tsne.add_argument("--device", default=None)
    tsne.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "show":
            path = write_report(args.run)
            print(path.read_text())
            print(f"wrote {path}", file=sys.stderr)
        elif args.command == "compare":
            print(compare(args.paths, args.label, args.out, include_prior=not args.no_prior))
            print(f"wrote {args.out}", file=sys.stderr)
        else:
            from .tsne import write_tsne

            out = write_tsne(args.run, args.out, per_class=args.per_class, snapshots=args.steps, part=args.part,
                             shards=args.shards, device=args.device, seed=args.seed)
            print(f"wrote {out}", file=sys.stderr)
            if len(args.run) == 1 and args.out is None:
                try:  # link the new figure from the run's report
                    print(f"wrote {write_report(args.run[0])}", file=sys.stderr)
                except FileNotFoundError:
                    pass
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
