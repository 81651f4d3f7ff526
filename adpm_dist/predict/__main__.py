"""`python -m adpm_dist.predict`: thin CLI over adpm_dist.predict (see its docstring)."""
from __future__ import annotations

import argparse
import sys

from . import __doc__ as LIBRARY_DOC
from . import load_model, missing_paths, predict_images, write_predictions_csv


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m adpm_dist.predict", description=LIBRARY_DOC.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="run directory (uses checkpoints/best.pt) or a .pt file")
    p.add_argument("--images", required=True, nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--samples", type=int, default=1, help="diffusion samples per image (majority vote if > 1)")
    p.add_argument("--sampler", default=None, help="truncated | respaced | ddim (default: the run's)")
    p.add_argument("--steps", type=int, default=None, help="reverse-chain steps (default: the run's test_timesteps)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", default=None, help="comma-separated class names the checkpoint must predict")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    expected = [c for c in args.classes.split(",") if c] if args.classes else None
    if missing := missing_paths(args.images):  # a typo must not pass as a prediction run with error rows
        print(f"error: --images: not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        loaded = load_model(args.checkpoint, args.device, expected)
        rows = predict_images(loaded, args.images, samples=args.samples, sampler=args.sampler, steps=args.steps,
                              batch_size=args.batch_size, seed=args.seed, progress=not args.quiet)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not rows:
        print(f"error: no image files found in {' '.join(args.images)}", file=sys.stderr)
        return 1
    write_predictions_csv(rows, loaded.class_names, args.out)
    failed = [r for r in rows if r["error"]]
    for r in failed:
        print(f"warning: {r['path']}: {r['error']}", file=sys.stderr)
    print(f"wrote {args.out}: {len(rows) - len(failed)} images predicted, {len(failed)} unreadable "
          f"(device {loaded.device}, {loaded.checkpoint})", file=sys.stderr)
    return 0 if len(failed) < len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
