"""The command line of `python -m adpm_dist.data.prepare` (prepare.py's docstring lists the forms):
argparse, the summary it prints, --verify, and publishing a remote --out. The library entry point
is `prepare.prepare()`."""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from ..extras import MissingExtra
from .hf import is_hf
from .location import RemotePath, as_location, is_remote, read_bytes, redact
from .manifest import MANIFEST_NAME, Manifest, load_manifest, verify_shards
from .prepare import DEFAULT_SAMPLES_PER_SHARD, __doc__ as PREPARE_DOC, format_counts, prepare, staging_dir
from .shards import default_workers
from .sources import READERS


def _verify(out: Path | str) -> int:
    if is_remote(str(out)):
        from .publish import verify_remote

        return verify_remote(str(out))
    out = as_location(out) if str(out).lower().startswith("file://") else Path(out)
    try:
        manifest = load_manifest(out)
        summary = verify_shards(manifest)
    except (ValueError, OSError) as exc:
        print(f"verify FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"verify OK: {summary['shards']} shards, {summary['samples']} samples match {out / MANIFEST_NAME} "
          f"(sha256, counts, keys); inputs {manifest.inputs or '(not recorded)'}")
    return 0


def _check_remote_out(url: str) -> None:
    """A remote --out holding a shard set is refused without --overwrite, like a local one (its
    own staging directory is always rewritten: it only mirrors the target)."""
    target = as_location(url)
    if isinstance(target, RemotePath) and target.protocol != "pipe":
        try:
            read_bytes(target / MANIFEST_NAME)
        except FileNotFoundError:
            return
        raise ValueError(f"--out {target} already holds a shard set ({MANIFEST_NAME}); pass --overwrite to replace it")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m adpm_dist.data.prepare", description=PREPARE_DOC.split("\n")[0])
    ap.add_argument("--dataset", type=_dataset_name, help=f"one of {', '.join(sorted(READERS))}, or hf:OWNER/NAME "
                    "(a Hugging Face dataset, or hf:/local/dir); required unless --verify alone")
    ap.add_argument("--out", required=True, help="output shard directory, or s3://bucket/prefix (then staged "
                    "locally and published: shards, index, manifest last)")
    ap.add_argument("--stage", type=Path, help="with a remote --out: the local staging directory "
                    "(default: one per URL under the system temporary directory)")
    ap.add_argument("--root", type=Path, help="dataset root in its official layout (not for digits_lt)")
    ap.add_argument("--test-root", type=Path, help="imagefolder: class folders forming a fixed test part "
                    "(with --folds K: K folds of --root beside it)")
    ap.add_argument("--groups", type=Path, help="imagefolder: CSV with columns image (path relative to --root, or "
                    "file name) and group (patient / lesion id); a group never spans two folds or parts")
    ap.add_argument("--image-size", type=int, help="shorter image side stored (digits_lt: 32, else 256)")
    ap.add_argument("--folds", type=int, help="stratified grouped folds; 0 = one train part (default: per dataset)")
    ap.add_argument("--test-fraction", type=float, help="held-out grouped test fraction (default: ham10000 0.3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples-per-shard", type=int, default=DEFAULT_SAMPLES_PER_SHARD)
    ap.add_argument("--workers", type=int, help=f"encoding processes (default min(4, CPUs) = {default_workers()})")
    ap.add_argument("--imbalance-ratio", type=float, help="digits_lt: head/tail ratio (default 50)")
    ap.add_argument("--n-max", type=int, help="digits_lt: head-class size (default 150)")
    ap.add_argument("--val-per-class", type=int,
                    help="digits_lt: undrawn digits per class in a balanced `val` part (default 10; 0 = none)")
    ap.add_argument("--top-k", type=int, help="scin: keep the K most frequent conditions (default 20)")
    hf = ap.add_argument_group("hf:OWNER/NAME (a Hugging Face dataset; HF_HOME, HF_HUB_OFFLINE apply)")
    hf.add_argument("--image-key", help="the image column (default image)")
    hf.add_argument("--label-key", help="the label column (default label)")
    hf.add_argument("--split", help="the split to read (default train)")
    hf.add_argument("--group-key", help="a patient / lesion id column: a group never spans two folds or parts")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing shard directory --out (swapped in "
                    "only once the new set is complete); without it a non-empty --out is refused")
    ap.add_argument("--verify", action="store_true", help="re-check shards against the manifest (sha256, counts)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def _dataset_name(value: str) -> str:
    if value in READERS or (is_hf(value) and len(value) > len("hf:")):
        return value
    raise argparse.ArgumentTypeError(f"invalid choice {value!r} (choose from {', '.join(sorted(READERS))}, "
                                     "or hf:OWNER/NAME)")


def _print_summary(manifest: Manifest, seconds: float) -> None:
    n_shards = sum(len(v) for v in manifest.parts.values())
    print(f"{manifest.dataset}: {sum(manifest.num_samples.values())} samples in {n_shards} shards "
          f"({manifest.protocol}) -> {manifest.root} [{seconds:.1f} s]")
    inputs = manifest.inputs
    print(f"inputs: {inputs['found']} found = {inputs['written']} written + {inputs['rejected']} rejected")
    print(format_counts(manifest))
    for note in manifest.warnings:
        print(f"WARNING: {note}", file=sys.stderr)
    if manifest.rejected:
        print(f"{len(manifest.rejected)} input(s) rejected (see {manifest.root / MANIFEST_NAME}):", file=sys.stderr)
        for r in manifest.rejected:
            print(f"  {r['file']}: {r['reason']}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.dataset is None:
        if args.verify:
            return _verify(args.out)
        ap.error("--dataset is required (or use --verify alone to check an existing --out)")

    options = {k: v for k, v in (("imbalance_ratio", args.imbalance_ratio), ("n_max", args.n_max),
                                 ("val_per_class", args.val_per_class), ("top_k", args.top_k),
                                 ("image_key", args.image_key), ("label_key", args.label_key), ("split", args.split),
                                 ("group_key", args.group_key)) if v is not None}
    t0 = time.perf_counter()
    remote = is_remote(args.out)
    local_out = (args.stage or staging_dir(args.out)) if remote else as_location(args.out)
    try:
        if remote and not args.overwrite:
            _check_remote_out(args.out)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # printed below from the manifest, once, readably
            manifest = prepare(args.dataset, local_out, root=args.root, test_root=args.test_root,
                               image_size=args.image_size, folds=args.folds, test_fraction=args.test_fraction,
                               groups=args.groups, seed=args.seed, samples_per_shard=args.samples_per_shard, workers=args.workers,
                               progress=not args.quiet, overwrite=args.overwrite or remote, **options)
    except (ValueError, OSError, MissingExtra) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print_summary(manifest, time.perf_counter() - t0)
    if remote:
        from .publish import publish

        try:
            publish(local_out, args.out)
        except (ValueError, OSError) as exc:
            print(f"error: publishing {local_out} to {redact(args.out)}: {exc}", file=sys.stderr)
            return 2
    return _verify(args.out) if args.verify else 0
