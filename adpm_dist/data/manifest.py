"""`OUT/manifest.json` + `OUT/index.csv`: what a shard directory contains, read without images.

manifest.json (written last, atomically; its presence means the directory is complete):
    format, dataset, class_names (label order), image_size, seed, protocol, options,
    counts {part: {class_name: n}}, parts {part: {num_samples, shards: [{file, num_samples, sha256}]}},
    inputs {found, written, rejected} (found = written + rejected: every input is accounted for),
    rejected [{file, reason}], warnings [str], index "index.csv"
index.csv: key,label,class_name,group,part,shard - one row per written sample, so training code can
carve a stratified (grouped) validation split or count classes without opening a tar file.

The directory may be remote (http(s)://, s3://, pipe:, see location.py): both files are read from
there, and every shard the manifest names is checked to exist when it is loaded (one listing per
S3 prefix, one HEAD per HTTP file), so a missing shard fails at start, not an hour into training.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .location import Location, RemotePath, as_location, missing, read_bytes
from .shards import IMAGE_EXTS, sha256_file
from .tario import read_samples
from ..files import atomic_write_text

FORMAT = "adpm-dist-shards/1"
MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.csv"
INDEX_FIELDS = ("key", "label", "class_name", "group", "part", "shard")


@dataclass(frozen=True)
class IndexRow:
    key: str
    label: int
    class_name: str
    group: str
    part: str
    shard: str  # file name inside the shard directory


@dataclass
class Manifest:
    root: Location  # the shard directory: an absolute Path, or a RemotePath (prints without secrets)
    dataset: str
    class_names: list[str]
    counts: dict[str, dict[str, int]]  # part -> class_name -> n
    image_size: int | None
    seed: int
    protocol: str
    parts: dict[str, list[Location]]  # part -> absolute shard paths (or RemotePaths), in stream order
    num_samples: dict[str, int]  # part -> n
    shards: dict[str, list[dict]]  # part -> [{file, num_samples, sha256}] as stored
    index: list[IndexRow]
    rejected: list[dict]
    options: dict
    inputs: dict  # {found, written, rejected}; {} for directories written before it existed
    warnings: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def check_parts(self, parts: str | Iterable[str]) -> list[str]:
        """Normalise `parts` to a list and fail with the available parts if one is unknown."""
        parts = [parts] if isinstance(parts, str) else list(parts)
        unknown = [p for p in parts if p not in self.parts]
        if unknown or not parts:
            raise ValueError(f"unknown part(s) {unknown or parts} in {self.root}; available: {list(self.parts)}")
        return parts

    def shard_sizes(self) -> dict[str, int]:
        """Shard file name -> its number of samples, as manifest.json lists it (checked as it is read)."""
        return {info["file"]: int(info["num_samples"]) for infos in self.shards.values() for info in infos}

    def shard_labels(self) -> dict[str, dict[str, int]]:
        """Shard file name -> {key: label} as index.csv lists them: what each shard must yield as it is read
        (stream.check_identity), so that a shard copied over another or relabelled is named, never trained on."""
        found: dict[str, dict[str, int]] = {}
        for r in self.index:
            found.setdefault(r.shard, {})[r.key] = r.label
        return found

    def rows(self, parts: str | Iterable[str]) -> list[IndexRow]:
        """Index rows of the given parts, in shard/stream order."""
        wanted = set(self.check_parts(parts))
        return [r for r in self.index if r.part in wanted]


def write_index(out: Path, rows: Sequence[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=INDEX_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows({k: r[k] for k in INDEX_FIELDS} for r in rows)
    atomic_write_text(out / INDEX_NAME, buf.getvalue())


def write_manifest(out: Path, data: dict) -> None:
    atomic_write_text(out / MANIFEST_NAME, json.dumps({"format": FORMAT, **data}, indent=2) + "\n")


def _read_index(path: Location) -> list[IndexRow]:
    try:
        text = read_bytes(path).decode("utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing (written by python -m adpm_dist.data.prepare)") from None
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != INDEX_FIELDS:
            raise ValueError(f"{path}: malformed header {reader.fieldnames}, expected {list(INDEX_FIELDS)}")
        try:
            return [IndexRow(**{**r, "label": int(r["label"])}) for r in reader]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: malformed row at line {reader.line_num}: {exc}") from exc


def load_manifest(shards_dir: str | os.PathLike | RemotePath) -> Manifest:
    """Load and cross-check a shard directory's manifest.json and index.csv (local or remote, see
    location.as_location); fail naming them if a shard it lists does not exist."""
    root = as_location(shards_dir)
    path = root / MANIFEST_NAME
    try:
        raw = read_bytes(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} not found: not a (complete) shard directory; create it with "
            f"`python -m adpm_dist.data.prepare --dataset NAME --out {root}`"
        ) from None
    try:
        data = json.loads(raw.decode("utf-8"))
        parts_raw = data["parts"]
        shards = {p: list(v["shards"]) for p, v in parts_raw.items()}
        num_samples = {p: int(v["num_samples"]) for p, v in parts_raw.items()}
        manifest = Manifest(
            root=root,
            dataset=data["dataset"],
            class_names=list(data["class_names"]),
            counts={p: {c: int(n) for c, n in v.items()} for p, v in data["counts"].items()},
            image_size=data["image_size"],
            seed=int(data["seed"]),
            protocol=data["protocol"],
            parts={p: [root / s["file"] for s in v] for p, v in shards.items()},
            num_samples=num_samples,
            shards=shards,
            index=[],
            rejected=list(data.get("rejected", [])),
            options=dict(data.get("options", {})),
            inputs=dict(data.get("inputs", {})),
            warnings=list(data.get("warnings", [])),
        )
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path} is malformed ({type(exc).__name__}: {exc})") from exc
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: unsupported format {data.get('format')!r}, expected {FORMAT!r}")

    manifest.index = _read_index(root / data.get("index", INDEX_NAME))
    for part in manifest.parts:
        n_index = sum(r.part == part for r in manifest.index)
        if n_index != manifest.num_samples[part]:
            raise ValueError(f"{root}: part {part!r} has {manifest.num_samples[part]} samples in "
                             f"{MANIFEST_NAME} but {n_index} rows in {INDEX_NAME}; re-run prepare")
    absent = missing(p for paths in manifest.parts.values() for p in paths)
    if absent:
        raise FileNotFoundError(f"{path} lists shards that do not exist: {[str(p) for p in absent]}")
    return manifest


def verify_shards(manifest: Manifest) -> dict:
    """Re-check a shard directory against its manifest; raise ValueError naming the first problem.

    Checks: every shard's sha256; its samples (count, keys and order) against manifest.json and
    index.csv; each sample has one image member and a .json; no group (patient, lesion, ...) in two
    parts; found = written + rejected. Returns {"shards": n, "samples": n}.
    """
    by_shard: dict[str, list[str]] = {}
    part_of_group: dict[str, str] = {}
    where = manifest.root / MANIFEST_NAME
    for row in manifest.index:
        by_shard.setdefault(row.shard, []).append(row.key)
        if part_of_group.setdefault(row.group, row.part) != row.part:
            raise ValueError(f"{manifest.root / INDEX_NAME}: group {row.group!r} is in parts "
                             f"{part_of_group[row.group]!r} and {row.part!r}")
    n_shards = n_samples = 0
    for part, infos in manifest.shards.items():
        for info in infos:
            f = manifest.root / info["file"]
            if sha256_file(f) != info["sha256"]:  # streamed: a remote shard is read once, never stored
                raise ValueError(f"{f}: sha256 does not match {where}")
            samples = list(read_samples(f))
            keys = [s["__key__"] for s in samples]
            if len(keys) != info["num_samples"]:
                raise ValueError(f"{f}: {len(keys)} samples, {where} says {info['num_samples']}")
            if keys != by_shard.get(info["file"], []):
                raise ValueError(f"{f}: sample keys differ from the rows of {manifest.root / INDEX_NAME}")
            for s in samples:
                if "json" not in s or sum(e in s for e in IMAGE_EXTS) != 1:
                    raise ValueError(f"{f}: sample {s['__key__']} lacks its image or .json member")
            n_shards, n_samples = n_shards + 1, n_samples + len(keys)
    inputs = manifest.inputs
    if inputs:
        if inputs["written"] != n_samples or inputs["rejected"] != len(manifest.rejected) \
                or inputs["found"] != inputs["written"] + inputs["rejected"]:
            raise ValueError(f"{where}: inputs {inputs} do not add up ({n_samples} samples in the shards, "
                             f"{len(manifest.rejected)} rejected)")
    return {"shards": n_shards, "samples": n_samples}
