"""Raw dataset -> WebDataset shards + manifest.json + index.csv.

    python -m adpm_dist.data.prepare --dataset digits_lt --out data/digits_lt
    python -m adpm_dist.data.prepare --dataset pad_ufes --root PAD-UFES-20/ --out shards/pad_ufes
    python -m adpm_dist.data.prepare --dataset ham10000 --root HAM10000/ --out shards/ham10000   # 7:3
    python -m adpm_dist.data.prepare --dataset scin --root scin/ --out shards/scin --top-k 20
    python -m adpm_dist.data.prepare --dataset hyper_kvasir --root hyper-kvasir/ --out shards/hk
    python -m adpm_dist.data.prepare --dataset imagefolder --root DIR [--test-root DIR] [--folds K] [--groups FILE.csv] --out SHARDS
    python -m adpm_dist.data.prepare --dataset hf:OWNER/NAME --image-key image --label-key label [--split train]
        [--group-key patient_id] --out SHARDS                  # a Hugging Face dataset (hf.py)
    python -m adpm_dist.data.prepare --verify --out SHARDS      # re-check an existing directory
    python -m adpm_dist.data.prepare --dataset NAME ... --out s3://bucket/prefix [--stage DIR]
        # writes into a local staging directory, then publishes (publish.py: shards, index, manifest last)

`prepare()` is the library entry point (Ray code calls it); `main()` is the only place with argparse.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import inspect
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

from ..files import TMP_INFIX, is_leftover, pid_alive
from .folds import assign_parts, part_sort_key, protocol_name
from .groups import apply_groups, warn_duplicates
from .hf import is_hf, read_hf
from .manifest import INDEX_NAME, MANIFEST_NAME, Manifest, load_manifest, write_index, write_manifest
from .shards import default_workers, write_shards
from .sources import READERS

DEFAULT_SAMPLES_PER_SHARD = 256
_SHARD_NAME = re.compile(r"[A-Za-z0-9_]+-\d{6}\.tar")


def _ours(entry: Path) -> bool:
    """A file prepare writes into a shard directory (or a killed prepare's temporary one)."""
    return entry.is_file() and (entry.name in (MANIFEST_NAME, INDEX_NAME) or bool(_SHARD_NAME.fullmatch(entry.name))
                                or is_leftover(entry))


def _describe(out: Path) -> str:
    try:
        m = json.loads((out / MANIFEST_NAME).read_text())
        return f"a shard set ({m['dataset']}, {m['protocol']}, parts {', '.join(m['parts'])})"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{sum(1 for _ in out.iterdir())} file(s)"


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out that would lose something: an existing non-empty directory without
    `overwrite`, and, even with it, one holding files prepare did not write (it is replaced whole)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ValueError(f"--out {out} already holds {_describe(out)}; pass --overwrite to replace it "
                         f"(the new set replaces it only once complete)")
    foreign = sorted(e.name for e in out.iterdir() if not _ours(e))
    if foreign:
        raise ValueError(f"--out {out} holds files prepare did not write ({', '.join(foreign[:3])}"
                         f"{', ...' if len(foreign) > 3 else ''}); --overwrite replaces only a shard directory")


def _beside(out: Path, tag: str) -> Path:
    """A hidden sibling of `out` named like the project's other temporary files (files.is_leftover)."""
    return out.with_name(f".{out.name}.{tag}{TMP_INFIX}{os.getpid()}")


def _clean_beside(out: Path) -> None:
    """What a killed prepare left beside `out`: put back a set it had moved aside but not yet
    replaced (killed between the two renames of _swap_in), then delete its half-written set."""
    for tag in ("old", "new"):
        for leftover in sorted(out.parent.glob(f".{glob.escape(out.name)}.{tag}{TMP_INFIX}*")):
            pid = leftover.name.rsplit(TMP_INFIX, 1)[1]
            if not pid.isdigit() or pid_alive(int(pid)):
                continue  # another prepare still writing
            if tag == "old" and not out.exists():
                os.replace(leftover, out)
                print(f"restored {out} (moved aside by a killed prepare)", file=sys.stderr)
            else:
                shutil.rmtree(leftover, ignore_errors=True)
                print(f"removed {leftover} (left by a killed prepare)", file=sys.stderr)


def _swap_in(new: Path, out: Path) -> None:
    """Put the complete set `new` at `out`. Two renames: `out` moved aside, `new` moved in; a kill
    between them leaves the old set beside `out`, and the next prepare puts it back."""
    old = None
    if out.exists():
        old = _beside(out, "old")
        os.replace(out, old)
    os.replace(new, out)
    _fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prepare(
    dataset: str,
    out: str | Path,
    *,
    root: str | Path | None = None,
    test_root: str | Path | None = None,
    image_size: int | None = None,
    folds: int | None = None,
    test_fraction: float | None = None,
    groups: str | Path | None = None,
    seed: int = 0,
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    **reader_options,
) -> Manifest:
    """Read `dataset`, assign parts, write shards, index.csv and (last) manifest.json into `out`.

    `out` must be absent or empty unless `overwrite` (then it must be a shard directory). The set is
    written into a hidden directory beside `out` and swapped in once complete, so a failed or
    killed prepare never leaves `out` half-written or mixed with an earlier set.

    Defaults come from the reader: digits_lt 32 px + train/test; others 256 px shorter side and
    5 folds, except HAM10000 (a 7:3 grouped train/test split: test_fraction 0.3) and imagefolder
    with `test_root` (train + test). Passing `folds` alone asks for pure K-fold CV (test_fraction
    0); passing both gives a held-out test part plus K folds of the rest. `reader_options` go to
    the reader (digits_lt: imbalance_ratio, n_max, val_per_class; scin: top_k). `groups` (imagefolder):
    a CSV of image -> patient / lesion group (groups.py). `workers` encoding processes
    (default min(4, CPUs)). Deterministic: the same input gives byte-identical output, whatever
    `workers` is. Warnings (small classes, missing lesion ids) are re-issued and kept in the manifest.
    """
    out = Path(out).resolve()
    _clean_beside(out)
    check_out(out, overwrite)
    reader = _reader(dataset, reader_options, folds, test_fraction)
    if groups is not None and dataset != "imagefolder":
        raise ValueError(f"--groups is for --dataset imagefolder; {dataset} takes its groups from its own metadata")
    kwargs = dict(root=root, test_root=test_root, seed=seed, **reader_options)
    if image_size is not None:
        kwargs["image_size"] = image_size
    source, records, notes, folds, test_fraction = _read_and_split(reader, kwargs, folds, test_fraction, seed, groups)
    if not records:
        reasons = "; ".join(f"{r['file']}: {r['reason']}" for r in source.rejected[:3])
        raise ValueError(f"{dataset}: no usable image under {root} ({len(source.rejected)} input(s) rejected"
                         + (f", e.g. {reasons})" if reasons else ")"))
    image_size = source.default_image_size if image_size is None else image_size

    out.parent.mkdir(parents=True, exist_ok=True)
    new = _beside(out, "new")
    try:
        new.mkdir()
        result = write_shards(new, records, image_size=image_size, samples_per_shard=samples_per_shard, seed=seed,
                              workers=default_workers() if workers is None else workers,
                              progress=progress and sys.stderr.isatty())  # no bar in a log file
        write_index(new, result.index)
        write_manifest(new, _manifest_data(source, result, notes, image_size=image_size, seed=seed, folds=folds,
                                           test_fraction=test_fraction, samples_per_shard=samples_per_shard))
        check_out(out, overwrite)  # again: something may have appeared there meanwhile
        _swap_in(new, out)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    return load_manifest(out)


def _reader(dataset: str, reader_options: dict, folds: int | None, test_fraction: float | None):
    """The dataset's reader, once its options and the split arguments are known to be valid."""
    if is_hf(dataset):
        reader = functools.partial(read_hf, name=dataset.split(":", 1)[1])
    elif dataset not in READERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(READERS)} or hf:OWNER/NAME")
    else:
        reader = READERS[dataset]
    accepted = inspect.signature(reader).parameters
    unknown = sorted(k for k in reader_options if k not in accepted)
    if unknown:
        raise ValueError(f"dataset {dataset!r} does not take option(s) {unknown}")
    if folds is not None and folds < 0:
        raise ValueError(f"folds must be >= 0, got {folds}")
    if test_fraction is not None and not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    return reader


def _read_and_split(reader, kwargs: dict, folds: int | None, test_fraction: float | None, seed: int,
                    groups: str | Path | None = None):
    """(source, records with parts, warnings, folds, test_fraction): the reader's defaults fill the
    split arguments not given; `groups` (a CSV) sets the records' groups; identical files in
    different groups are warned about; the warnings are re-issued and kept for the manifest."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = reader(**kwargs)
        if groups is not None:
            source = apply_groups(source, Path(groups), [Path(r) for r in (kwargs["root"], kwargs["test_root"]) if r])
        warn_duplicates(source.records)
        if test_fraction is None:
            test_fraction = source.default_test_fraction if folds is None else 0.0
        folds = source.default_folds if folds is None else folds
        records = assign_parts(source.records, folds, seed, test_fraction)
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return source, records, [str(w.message) for w in caught], folds, test_fraction


def _manifest_data(source, result, notes: list[str], *, image_size: int, seed: int, folds: int,
                   test_fraction: float, samples_per_shard: int) -> dict:
    """manifest.json's content (written last: its presence marks a complete shard directory)."""
    parts = sorted(result.parts, key=part_sort_key)
    counts = {p: {c: 0 for c in source.class_names} for p in parts}
    for row in result.index:
        counts[row["part"]][row["class_name"]] += 1
    rejected = source.rejected + result.rejected
    return {
        "dataset": source.name,
        "class_names": source.class_names,
        "image_size": image_size,
        "seed": seed,
        "protocol": protocol_name(parts, folds, test_fraction),
        "options": {**source.options, "folds": folds, "test_fraction": test_fraction,
                    "samples_per_shard": samples_per_shard},
        "counts": counts,
        "parts": {p: {"num_samples": sum(s["num_samples"] for s in result.parts[p]), "shards": result.parts[p]}
                  for p in parts},
        "inputs": {"found": len(source.records) + len(source.rejected), "written": len(result.index),
                   "rejected": len(rejected)},
        "rejected": rejected,
        "warnings": notes,
        "index": "index.csv",
    }


def format_counts(manifest: Manifest) -> str:
    """A per-class x per-part count table (plain text)."""
    parts = list(manifest.parts)
    header = ["class"] + parts + ["total"]
    rows = [[c] + [str(manifest.counts[p][c]) for p in parts] + [str(sum(manifest.counts[p][c] for p in parts))]
            for c in manifest.class_names]
    rows.append(["total"] + [str(manifest.num_samples[p]) for p in parts] + [str(sum(manifest.num_samples.values()))])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def staging_dir(url: str) -> Path:
    """Where `--out URL` is prepared before publishing: the same for the same URL, so a re-run
    rewrites (byte-identically) and re-publishes only what changed."""
    tag = hashlib.sha256(url.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"adpm_stage_{tag}"


def main(argv: list[str] | None = None) -> int:
    """The command line (prepare_cli.py: argparse, printing, publishing)."""
    from .prepare_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
