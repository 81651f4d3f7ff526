"""Shards for a cross-validation search: prepared once, before any trial, or checked if given.

Each trial evaluates on `fold{k}` and trains on the other folds (engine.plan_data leaves out the
evaluation part, the fixed `test` part and a `val` part), so the shards must hold exactly
fold0..fold{N-1} (digits-LT adds its fixed `test` part, which the search never reads, and its
balanced `val` part, on which every trial selects its checkpoint).
"""
from __future__ import annotations

import re
from pathlib import Path

from ..data.location import as_location, is_remote
from ..data.manifest import MANIFEST_NAME, Manifest, load_manifest
from ..data.plan import VAL_PART

AUTO_PREPARED = ("digits_lt",)  # embedded: prepared without --root
DEFAULT_FOLDS = 5


def fold_parts(manifest: Manifest) -> list[str]:
    return sorted((p for p in manifest.parts if re.fullmatch(r"fold\d+", p)), key=lambda p: int(p[4:]))


def prepare_command(dataset: str, folds: int, samples_per_shard: int | None = None, test: bool = False) -> str:
    """The prepare line a refusal suggests; ``test``: the shards had a `test` part, which it keeps."""
    root = "" if dataset in AUTO_PREPARED else f" --root /path/to/{dataset}"
    root += " --test-root /path/to/test_images" if test and dataset not in AUTO_PREPARED else ""
    small = f" --samples-per-shard {samples_per_shard}" if samples_per_shard else ""
    return (f"python -m adpm_dist.data.prepare --dataset {dataset}{root} --out data/{dataset}_{folds}fold "
            f"--folds {folds}{small}")


def check_shard_counts(manifest: Manifest, min_shards: int, dataset: str) -> None:
    """Each rank of a trial reads whole shards: every fold needs >= `min_shards` (the ranks) of them. Loader
    workers need none of their own: a rank runs as many as it has shards (data.feed.workers_for)."""
    few = {p: len(manifest.parts[p]) for p in fold_parts(manifest) if len(manifest.parts[p]) < min_shards}
    if few:
        smallest = min(manifest.num_samples[p] for p in fold_parts(manifest))
        raise ValueError(f"{manifest.root}: folds {few} have fewer than {min_shards} shard(s), the training "
                         f"processes per trial; prepare smaller shards with: "
                         f"{prepare_command(dataset, len(fold_parts(manifest)), max(1, smallest // min_shards), 'test' in manifest.parts)}")


def check_folds(manifest: Manifest, folds: int | None, dataset: str) -> int:
    """The number of folds of `manifest`, which must be fold0..fold{N-1} (and N == `folds` if given)."""
    parts = fold_parts(manifest)
    n = len(parts)
    if n < 2 or parts != [f"fold{k}" for k in range(n)]:
        raise ValueError(f"{manifest.root} has parts {list(manifest.parts)}, not fold0..fold{{N-1}} (N >= 2) for "
                         f"cross-validation; prepare fold shards with: {prepare_command(dataset, folds or DEFAULT_FOLDS)}")
    if folds is not None and folds != n:
        raise ValueError(f"--folds {folds} but {manifest.root} has {n} folds ({', '.join(parts)}); "
                         f"pass --folds {n} or prepare new shards with: {prepare_command(dataset, folds)}")
    extra = [p for p in manifest.parts if p not in parts and p not in ("test", VAL_PART)]
    if extra:
        raise ValueError(f"{manifest.root} has parts {extra} besides the folds, `{VAL_PART}` and `test`; every "
                         f"trial would train on them too. Prepare fold shards with: {prepare_command(dataset, n)}")
    return n


def resolve_shards(dataset: str, shards: str | None, out: Path, folds: int | None, root: str | None = None,
                   min_shards: int = 1, progress: bool = True) -> tuple[Path | str, int]:
    """(absolute shard directory, or the URL as given, number of folds).

    Given `shards` (a directory, or a URL: file://, http(s)://, s3://bucket/prefix, pipe:...), they
    are checked; a URL is returned unchanged, for the trials' data.shards (keep credentials out of
    it: AWS environment/config files, ~/.netrc). Otherwise they are prepared once under `out/shards` with
    `folds` folds: digits-LT from the embedded data, other datasets from their official layout at
    `root` (pure K-fold CV; digits-LT keeps its fixed `test` part, which the search never reads).
    Every fold gets at least `min_shards` shards (processes x data workers of a multi-worker trial).
    """
    if shards is not None:
        if root is not None:
            raise ValueError("pass either --shards (prepared already) or --root (prepare here), not both")
        remote = is_remote(shards)
        path = shards if remote else as_location(shards)
        if not remote and not (path / MANIFEST_NAME).is_file():
            raise FileNotFoundError(f"--shards {shards}: no {MANIFEST_NAME} there; create the shards with: "
                                    f"{prepare_command(dataset, folds or DEFAULT_FOLDS)}")
        manifest = load_manifest(path)  # a remote one: its FileNotFoundError names the URL (redacted)
        if manifest.dataset != dataset:
            print(f"note: --shards {manifest.root} holds dataset {manifest.dataset!r} (--dataset is {dataset!r})")
        n = check_folds(manifest, folds, dataset)
        check_shard_counts(manifest, min_shards, dataset)
        return path, n

    folds = DEFAULT_FOLDS if folds is None else folds
    from ..data.sources import READERS

    if dataset not in READERS:
        raise ValueError(f"unknown dataset {dataset!r}: adpm_dist.data.sources has no reader for it "
                         f"(available: {', '.join(sorted(READERS))}); pass --shards DIR with fold shards")
    if dataset not in AUTO_PREPARED and root is None:
        raise ValueError(f"dataset {dataset!r} needs its files: pass --root /path/to/{dataset} (official layout, "
                         f"see docs) to prepare {folds}-fold shards here, or prepare them yourself with\n  "
                         f"{prepare_command(dataset, folds)}\nand pass --shards data/{dataset}_{folds}fold")
    path = (out / "shards").resolve()
    if (path / MANIFEST_NAME).is_file():
        try:
            manifest = load_manifest(path)
            same_root = root is None or manifest.options.get("root") == str(Path(root).resolve())
            if manifest.dataset == dataset and same_root and check_folds(manifest, folds, dataset) == folds:
                check_shard_counts(manifest, min_shards, dataset)
                return path, folds  # prepared by an earlier (interrupted) run of this search
        except ValueError:
            pass
    from ..data.prepare import prepare

    if progress:
        print(f"preparing {dataset} shards with {folds} folds in {path} ...", flush=True)
    # Data seed fixed at 0: every search over this dataset sees the same folds (shard size does not change them).
    # overwrite: `path` is this search's own directory (a set that did not match is replaced whole)
    manifest = prepare(dataset, path, root=root, folds=folds, seed=0, progress=False, overwrite=True)
    check_folds(manifest, folds, dataset)
    smallest = min(manifest.num_samples[p] for p in fold_parts(manifest))
    if min(len(manifest.parts[p]) for p in fold_parts(manifest)) < min_shards:
        manifest = prepare(dataset, path, root=root, folds=folds, seed=0, progress=False, overwrite=True,
                           samples_per_shard=max(1, smallest // min_shards))
        check_shard_counts(manifest, min_shards, dataset)
    return path, folds
