"""Write records as WebDataset tar shards: `OUT/{part}-{i:06d}.tar`, parallel, deterministic, atomic.

Each sample is `{key}.jpg` (or `.png`) + `{key}.json` with label, class_name, group, part, key.
- Encoding (decode once, EXIF orientation, RGB, resize, encode once: encode.py) runs in `workers`
  processes; results come back in input order, so the output does not depend on `workers`.
- Same input -> byte-identical shards: samples are ordered by a seeded shuffle per part (so a shard
  mixes classes and a small shuffle buffer suffices when streaming), tar headers are fixed.
- Each shard is written under a temporary name, fsynced and renamed into place: a reader never
  sees a half-written shard. (prepare.py writes the manifest last, for the directory as a whole.)
- An input that cannot be decoded is rejected with its reason, never silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .encode import encode_task
from .folds import part_sort_key
from .location import RemotePath, open_binary
from ..files import temporary_name
from .records import Record
from .tario import TarSampleWriter

IMAGE_EXTS = ("jpg", "png")  # the image members a shard sample may carry


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class WriteResult:
    parts: dict[str, list[dict]] = field(default_factory=dict)  # part -> [{file, num_samples, sha256}]
    index: list[dict] = field(default_factory=list)  # one row per written sample (index.csv)
    rejected: list[dict] = field(default_factory=list)  # [{file, reason}]


def sha256_file(path: Path | RemotePath) -> str:
    """sha256 of a local file or, streamed, of a remote one."""
    h = hashlib.sha256()
    with open_binary(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _ShardSink:
    """Writes `{part}-{i:06d}.tar` files of at most `maxcount` samples, each atomically."""

    def __init__(self, out: Path, part: str, maxcount: int):
        self.out, self.part, self.maxcount = out, part, maxcount
        self.shards: list[dict] = []
        self._writer: TarSampleWriter | None = None
        self._count = 0

    @property
    def current_name(self) -> str:
        return f"{self.part}-{len(self.shards):06d}.tar"

    def write(self, sample: dict) -> str:
        if self._writer is None:
            self._tmp = temporary_name(self.out / self.current_name)  # .NAME.tmp-PID: removed at the next start
            self._file = open(self._tmp, "wb")
            self._writer = TarSampleWriter(self._file)
        name = self.current_name
        self._writer.write(sample)
        self._count += 1
        if self._count == self.maxcount:
            self.close()
        return name

    def abort(self) -> None:
        if self._writer is not None:
            self._file.close()
            self._tmp.unlink(missing_ok=True)
            self._writer = None

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self.out / self.current_name
        os.replace(self._tmp, final)
        self.shards.append({"file": final.name, "num_samples": self._count, "sha256": sha256_file(final)})
        self._writer, self._count = None, 0


def _encoded(records: list[Record], image_size: int | None, workers: int) -> Iterator[tuple[str, bytes] | str]:
    """encode_task over the records, in order; in `workers` processes when that pays off.

    In-memory records (digits-LT) are encoded inline: they are already decoded, and pickling them
    to a worker costs about as much as encoding them.
    """
    tasks = [(None if r.path is None else str(r.path), r.image, image_size) for r in records]
    if workers <= 1 or len(tasks) < 2 * workers or all(r.path is None for r in records):
        yield from map(encode_task, tasks)
        return
    # spawn, not fork: the caller may hold threads (tqdm, torch, Ray) that fork would copy mid-state.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(encode_task, tasks, chunksize=8)


def ordered_by_part(records: Iterable[Record], seed: int) -> list[Record]:
    """Parts in fold0.., train, test order; inside a part, a seeded shuffle (independent of input order)."""
    by_part: dict[str, list[Record]] = {}
    for r in sorted(records, key=lambda r: r.key):
        by_part.setdefault(r.part, []).append(r)
    ordered = []
    for part in sorted(by_part, key=part_sort_key):
        rs = by_part[part]
        random.Random(f"{seed}:{part}").shuffle(rs)  # str seeds are hashed deterministically
        ordered += rs
    return ordered


def write_shards(
    out: Path,
    records: list[Record],
    *,
    image_size: int | None,
    samples_per_shard: int,
    seed: int,
    workers: int = 1,
    progress: bool = True,
) -> WriteResult:
    """Encode and write every record (part must be set); unreadable images go to `rejected`."""
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    if any(r.part is None for r in records):
        raise ValueError("write_shards: every record needs a part (call folds.assign_parts first)")
    out.mkdir(parents=True, exist_ok=True)
    result = WriteResult()
    ordered = ordered_by_part(records, seed)
    sink: _ShardSink | None = None
    bar = tqdm(total=len(ordered), desc="writing shards", unit="img", disable=not progress, file=sys.stderr)
    try:
        for r, encoded in zip(ordered, _encoded(ordered, image_size, workers)):
            bar.update(1)
            if sink is None or sink.part != r.part:
                if sink is not None:
                    sink.close()
                    result.parts[sink.part] = sink.shards
                sink = _ShardSink(out, r.part, samples_per_shard)
            if isinstance(encoded, str):
                result.rejected.append({"file": str(r.path or r.key), "reason": encoded})
                tqdm.write(f"WARNING: rejected {r.path or r.key} ({encoded})", file=sys.stderr)
                continue
            ext, data = encoded
            meta = {"label": r.label, "class_name": r.class_name, "group": r.group, "part": r.part, "key": r.key}
            shard = sink.write({"__key__": r.key, ext: data, "json": json.dumps(meta, sort_keys=True).encode()})
            result.index.append({**meta, "shard": shard})
    except BaseException:
        if sink is not None:
            sink.abort()  # never publish a shard cut short by an error
        raise
    finally:
        bar.close()
    if sink is not None:
        sink.close()
        result.parts[sink.part] = sink.shards
    return result
