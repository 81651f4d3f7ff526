"""Streaming batches from the shards: training split by SHARD over ranks and workers, evaluation by sample.

Training (`train_batches`): each rank opens only its own shards; that is what lets the stream scale.
1. Every epoch the shards of the requested parts are shuffled with a seed shared by all ranks,
   (seed, epoch), so all ranks compute the same assignment without communicating.
2. Shards are dealt to ranks balancing their sample counts (taken from index.csv after the key
   filters, so no tar is opened to plan): largest first, each to the least-loaded rank. Shards of
   equal size keep the shuffled order, so the assignment changes from epoch to epoch.
3. Every rank streams exactly the same budget B = len() x batch_size samples (B <= floor(n / world)),
   so every rank yields exactly len() batches and DDP never waits for a rank that ran dry. A rank
   whose shards hold more than B stops at B (the skipped surplus is a different one each epoch); a
   rank holding fewer re-reads its own shards, in a new order, to fill the shortfall. The imbalance
   is below one shard per rank, so almost every sample is seen exactly once per epoch.
   Why not resampling (webdataset's resampled=True + with_epoch): drawing shards with replacement
   makes some samples appear several times in an epoch and others not at all. Why not padding as
   DistributedSampler does: it needs the global sample order, i.e. every rank reading every shard.
4. Inside a rank, its shards are dealt the same way to its DataLoader workers and B is split over
   the workers in proportion to their samples (largest remainder), so the rank's total stays exact;
   a worker without a shard gets budget 0 and stops at once (no hang, no empty-shard error).
5. Samples are mixed in a shuffle buffer seeded by (seed, epoch, rank, worker), decoded once,
   transformed and batched in the worker (one transfer per batch); each worker's short last batch
   is merged with the others' in the main process.
6. Class-balanced epochs (`class_balanced=True`, method=resample): every sample gets a number of
   copies for the epoch (`class_balanced_copies`: each of the K classes gets m = n // K draws, seeded
   by (seed, epoch), the same on every rank, from index.csv alone). Everything above then runs on
   copies instead of samples: shard sizes are their copy counts, a shard yields each sample that
   many times (each copy augmented on its own); the epoch length K x m is the same every epoch.
It needs at least world_size x max(1, num_workers) shards holding samples; with fewer, a ValueError
says how to re-run prepare with a smaller --samples-per-shard.

Evaluation (`eval_batches`): every rank walks all shards of the part but decodes only the samples
with index i % world_size == rank: exact-once coverage, a deterministic order that does not depend
on the number of workers, and per-rank counts that differ by at most one. Evaluation parts are a
fraction of the data and walking a tar without decoding is cheap, so this keeps the exactness
simple. Batches carry `key`; callers gather, de-duplicate and compare the count with the manifest
(engine.predict does).

Accelerate: do not prepare() these loaders expecting anything. They are not torch DataLoaders, so
`Accelerator.prepare(loader)` hands them back unchanged (tested); in particular it cannot apply its
IterableDataset default of dispatching rank 0's batches to everybody (docs/data.md, "2. Streaming").
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info

from .location import RemotePath
from .manifest import Manifest
from .shards import IMAGE_EXTS
from .tario import ShardCountError, TruncatedShard, check_count, read_samples


def read_shard(path: str | Path | RemotePath) -> Iterator[dict]:
    """Raw samples ({"__key__", "__url__", "png"|"jpg": bytes, "json": bytes}) of one tar shard, in order.
    `path`: a local file or a remote one (location.py): each worker streams its own shards. A shard
    cut short raises tario.TruncatedShard naming it; it never reads as a smaller shard."""
    return read_samples(path)


def _shard_name(path: str | RemotePath) -> str:
    return path.name if isinstance(path, RemotePath) else Path(path).name


class ShardIdentityError(ShardCountError):
    """A shard that yields a sample index.csv does not list for it, or with another label: a shard copied
    over another, swapped or relabelled after prepare (the counts alone can still match)."""


def check_identity(path, sample: dict, labels: dict[str, int] | None, num_classes: int | None = None) -> None:
    """The sample is one index.csv lists for shard `path` (`labels`: its key -> label), with that label.
    A cached sample (no "json" member) was checked when the cache was filled. A label that is no class
    at all (out of range, not a number) is a bad sample, skipped and named by decode_sample instead."""
    if labels is None:
        return
    key = sample["__key__"]
    if key not in labels:
        raise ShardIdentityError(f"{path}: sample {key!r} is not one of the {len(labels)} that index.csv lists for "
                                 "this shard (a shard copied over another, or swapped?); re-run prepare, or copy the "
                                 "shard directory again")
    if "json" in sample:
        try:
            label = json.loads(sample["json"])["label"]
        except (ValueError, KeyError, TypeError):
            return  # unreadable metadata: decode_sample names it as a bad sample
        if not isinstance(label, int) or label < 0 or (num_classes is not None and label >= num_classes):
            return
        if label != labels[key]:
            raise ShardIdentityError(f"{path}: sample {key!r} has label {label!r}, index.csv says {labels[key]} (the "
                                     "shard was changed after prepare); re-run prepare, or copy the shard directory again")


def _selected(path: str | RemotePath, keep: Callable[[str], int], sizes: dict[str, int],
              selected: int | None, read: Callable | None = None,
              labels: dict[str, dict[str, int]] | None = None, num_classes: int | None = None
              ) -> Iterator[tuple[dict, int]]:
    """(sample, keep(key)) for each sample of one shard. Read to its end, the shard must hold the
    samples its manifest lists (`sizes`: file name -> count) and `selected` kept ones (the count
    planned from index.csv): otherwise the epoch would quietly be shorter, or refilled by re-reads.
    `labels` (manifest.shard_labels): each sample must be one index.csv lists for the shard, with its label."""
    got, total, expected = 0, 0, sizes.get(_shard_name(path))
    mine = labels.get(_shard_name(path), {}) if labels is not None else None
    try:
        for sample in (read or read_shard)(path):
            check_identity(path, sample, mine, num_classes)
            n = int(keep(sample["__key__"]))
            got, total = got + n, total + 1
            yield sample, n
    except TruncatedShard as exc:
        raise exc.against(expected) from None
    check_count(str(path), total, expected)
    if selected is not None and got != selected:
        raise ShardCountError(f"{path}: {got} of its samples are selected, index.csv lists {selected}: its keys "
                              f"differ from index.csv (re-run prepare, or copy the shard directory again)")


def _shard_ref(path: Path | RemotePath) -> str | RemotePath:
    """What the loaders carry per shard: a local path as str (as always), a RemotePath as itself
    (its str() is redacted, so it could not be re-opened from the string)."""
    return path if isinstance(path, RemotePath) else str(path)


class BadSample(ValueError):
    """A sample that cannot be used (truncated image, bad JSON, label out of range), named by shard and key."""

    def __init__(self, shard: str, key: str, reason: str):
        super().__init__(f"bad sample {key!r} in shard {shard}: {reason}")
        self.shard, self.key, self.reason = shard, key, reason

    def record(self) -> dict:
        return {"shard": self.shard, "key": self.key, "reason": self.reason}


def decode_sample(sample: dict, num_classes: int | None = None) -> tuple[Image.Image, int, str]:
    """Raw sample -> (RGB PIL image, label, key). Each image is decoded exactly once, here; anything
    wrong with it is a BadSample naming its shard, key and reason."""
    key, shard = str(sample.get("__key__")), str(sample.get("__url__"))
    try:
        ext = next((e for e in IMAGE_EXTS if e in sample), None)
        if ext is None:
            raise ValueError("no image member")
        label = int(json.loads(sample["json"])["label"])
        if num_classes is not None and not 0 <= label < num_classes:
            raise ValueError(f"label {label} out of range [0, {num_classes})")
        image = Image.open(io.BytesIO(sample[ext]))
        image.load()  # a truncated file fails here, not in a transform later
        if image.mode != "RGB":  # prepare stores RGB; a copy only for shards written by other tools
            image = image.convert("RGB")
    except (OSError, ValueError, KeyError, TypeError, SyntaxError) as e:  # PIL, JSON, int(), missing keys
        raise BadSample(shard, key, f"{type(e).__name__}: {e}") from None
    return image, label, key


def balance(counts: Sequence[int], bins: int) -> list[list[int]]:
    """Deal items (indices into `counts`) to `bins` bins: largest first, each to the least-loaded bin
    (ties: lowest bin). Each bin lists its items in their original order."""
    dealt: list[list[int]] = [[] for _ in range(bins)]
    load = [0] * bins
    for i in sorted(range(len(counts)), key=lambda i: -counts[i]):  # stable: equal sizes keep their order
        b = min(range(bins), key=lambda b: (load[b], b))
        dealt[b].append(i)
        load[b] += counts[i]
    return [sorted(d) for d in dealt]


def split_budget(budget: int, counts: Sequence[int]) -> list[int]:
    """Split `budget` in proportion to `counts` (largest remainder, ties to the lower index); sums to budget."""
    total = sum(counts)
    if total == 0:
        return [0] * len(counts)
    shares = [budget * c // total for c in counts]
    order = sorted(range(len(counts)), key=lambda i: (-(budget * counts[i] % total), i))
    for i in order[: budget - sum(shares)]:
        shares[i] += 1
    return shares


def _buffer_shuffle(items: Iterable, size: int, rng: random.Random, initial: int = 100) -> Iterator:
    """Shuffle buffer of up to `size` items that starts emitting once it holds `initial` (it then
    grows by one every other arrival), so a worker's first batch does not wait for `size` reads."""
    buf: list = []
    for n, x in enumerate(items):
        buf.append(x)
        if len(buf) > size or (len(buf) >= min(initial, size) and (len(buf) == size or n % 2)):
            i = rng.randrange(len(buf))
            buf[i], buf[-1] = buf[-1], buf[i]
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


class _KeyFilter:
    """keep(key): in `include` (if given) and not in `exclude`. A class, not a closure, so it pickles
    (DataLoader workers started with 'spawn' pickle the dataset)."""

    def __init__(self, include: frozenset[str] | None, exclude: frozenset[str]):
        self.include, self.exclude = include, exclude

    def __call__(self, key: str) -> bool:
        return key not in self.exclude and (self.include is None or key in self.include)


def class_balanced_copies(labels: dict[str, int], seed: int, epoch: int) -> dict[str, int]:
    """Copies of each key in one class-balanced epoch (keys absent: 0 copies).

    With n samples of K classes (K = classes with a sample), class j (n_j samples) gets exactly
    m = n // K draws: every sample m // n_j copies, plus one more for m % n_j of them chosen at
    random (seeded by (seed, epoch)), so a head class is subsampled without replacement and a tail
    class repeated as evenly as possible. Deterministic: every rank computes the same copies.
    """
    by_class: dict[int, list[str]] = {}
    for key in sorted(labels):
        by_class.setdefault(labels[key], []).append(key)
    if not by_class:
        return {}
    m = len(labels) // len(by_class)
    rng = random.Random(f"{seed}:{epoch}:class-balanced")
    copies = {}
    for label in sorted(by_class):
        keys = by_class[label]
        full, extra = divmod(m, len(keys))
        chosen = set(rng.sample(keys, extra))
        copies.update({k: full + (k in chosen) for k in keys})
    return copies


class _Copies:
    """copies(key) -> int (0 = not in this epoch): a class-balanced epoch's key filter. Pickles."""

    def __init__(self, copies: dict[str, int]):
        self.copies = copies

    def __call__(self, key: str) -> int:
        return self.copies.get(key, 0)


def _budgeted(shards: Sequence[tuple[str | RemotePath, int]], budget: int, keep: Callable[[str], int],
              rng: random.Random, sizes: dict[str, int] | None = None, read: Callable | None = None,
              labels: dict[str, dict[str, int]] | None = None, num_classes: int | None = None) -> Iterator[dict]:
    """Exactly `budget` samples from `shards` ((shard, samples passing `keep`)): stop early if they
    hold more, re-read them if fewer. `keep(key)`: True/False, or a number of copies (class-balanced
    epochs). `sizes`: each shard's sample count in the manifest, checked as it is read (_selected).
    `read`: how a shard's samples are read (default `read_shard`; a decoded cache's reader with data.cache)."""
    produced, order = 0, list(shards)
    while produced < budget:
        before = produced
        for path, selected in order:
            for sample, copies in _selected(path, keep, sizes or {}, selected, read, labels, num_classes):
                for _ in range(copies):
                    yield sample
                    produced += 1
                    if produced == budget:
                        return
        if produced == before:  # never loop forever on shards that disagree with index.csv
            raise RuntimeError(f"shards {[str(p) for p, _ in shards]} hold no sample the index promised; re-run prepare")
        order = rng.sample(order, len(order))


class _TrainSamples(IterableDataset):
    """One rank's training samples for one epoch: its shards, a fixed budget, split over workers.

    Yields collated chunks of `batch_size` samples (a worker's last chunk may be short): one
    shared-memory transfer per batch instead of one per image, as a DataLoader with batch_size does.
    """

    def __init__(self, transform, keep: Callable[[str], bool], shuffle_buffer: int, batch_size: int,
                 num_classes: int | None = None):
        self.transform, self.keep, self.shuffle_buffer, self.batch_size = transform, keep, shuffle_buffer, batch_size
        self.num_classes = num_classes
        self.source = None  # a decoded cache (cache.py) replaces reading and decoding; None: the shards
        self.shards: list[tuple[str | RemotePath, int]] = []  # (shard, samples passing `keep`), set per epoch
        self.sizes: dict[str, int] = {}  # shard file name -> its samples in the manifest
        self.labels: dict[str, dict[str, int]] | None = None  # shard file name -> {key: label} (index.csv)
        self.budget = 0
        self.seed = ""

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        counts = [n for _, n in self.shards]
        dealt = balance(counts, nw)
        budget = split_budget(self.budget, [sum(counts[i] for i in d) for d in dealt])[wid]
        mine = [self.shards[i] for i in dealt[wid]]
        stream = _budgeted(mine, budget, self.keep, random.Random(f"{self.seed}:{wid}:refill"), self.sizes,
                           self.source and self.source.read, self.labels, self.num_classes)
        if self.shuffle_buffer > 1:
            stream = _buffer_shuffle(stream, self.shuffle_buffer, random.Random(f"{self.seed}:{wid}"))
        yield from _decoded_batches(stream, self.transform, self.batch_size, skip_bad=True,
                                    num_classes=self.num_classes, source=self.source, seed=self.seed)


class _EvalSamples(IterableDataset):
    """Rank `rank`'s share of the selected samples (index i % world_size == rank), in shard order,
    as batches: batch b of the share goes to worker b % num_workers, which is the order in which a
    DataLoader collects from its workers, so the batches arrive in share order for any worker count."""

    def __init__(self, shards: Sequence[str | Path | RemotePath], transform, *, rank: int, world_size: int, keep: Callable[[str], bool],
                 batch_size: int):
        self.shards, self.transform = [_shard_ref(s) for s in shards], transform
        self.rank, self.world_size, self.keep, self.batch_size = rank, world_size, keep, batch_size
        self.num_classes: int | None = None
        self.sizes: dict[str, int] = {}  # shard file name -> its samples in the manifest
        self.selected: dict[str, int] = {}  # shard file name -> its samples passing `keep` (index.csv)
        self.labels: dict[str, dict[str, int]] | None = None  # as _TrainSamples.labels
        self.source = None  # as _TrainSamples.source

    def _rank_share(self) -> Iterator[dict]:
        i = 0  # index among the samples that pass the key filter, the same on every rank
        for path in self.shards:
            for sample, kept in _selected(path, self.keep, self.sizes, self.selected.get(_shard_name(path), 0),
                                          self.source and self.source.read, self.labels, self.num_classes):
                if kept:
                    if i % self.world_size == self.rank:
                        yield sample
                    i += 1

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = (sample for j, sample in enumerate(self._rank_share()) if (j // self.batch_size) % nw == wid)
        yield from _decoded_batches(mine, self.transform, self.batch_size, num_classes=self.num_classes,
                                    source=self.source)


def _decoded_batches(samples: Iterable[dict], transform, batch_size: int, *, skip_bad: bool = False,
                     num_classes: int | None = None, source=None, seed: str = "") -> Iterator[dict]:
    """Decode and transform each raw sample once, then batch; the last batch may be short.

    A BadSample stops evaluation (exact-once coverage cannot hold). In training (``skip_bad``) it is
    recorded in the batch's ``skipped`` list and its place taken by the next good sample of the same
    stream, so every rank still yields exactly its number of batches.
    `source.decode` (a decoded cache) replaces `decode_sample`, raising the same BadSample.
    A transform with `fields(image, seed)` (device_augment.HostSquares) gives several batch fields,
    its random draws seeded by (`seed`, key, n-th time the key comes in this stream).
    """
    decode = source.decode if source is not None else decode_sample
    chunk, skipped, owed, seen = [], [], 0, {}
    for sample in samples:
        try:
            image, label, key = decode(sample, num_classes)
        except BadSample as bad:
            if not skip_bad:
                raise
            skipped.append(bad.record())
            owed += 1
            continue
        seen[key] = seen.get(key, 0) + 1
        item = (_fields(transform, image, f"{seed}:{key}:{seen[key]}"), label, key)
        for _ in range(1 + owed):
            chunk.append(item)
            if len(chunk) == batch_size:
                yield _collate(chunk, skipped)
                chunk, skipped = [], []
        owed = 0
    if chunk:
        yield _collate(chunk, skipped)


def _fields(transform, image, seed: str) -> dict:
    """A sample's batch fields: {"image": transform(image)}, or the transform's own `fields`."""
    fields = getattr(transform, "fields", None)
    return fields(image, seed) if fields is not None else {"image": transform(image)}


def _collate(items: list, skipped: list[dict] | None = None) -> dict:
    fields, labels, keys = zip(*items)
    # default_collate stacks straight into shared memory inside a DataLoader worker (one copy less
    # than torch.stack followed by the worker's move to shared memory).
    return {**{name: default_collate([f[name] for f in fields]) for name in fields[0]},
            "label": torch.tensor(labels, dtype=torch.long), "key": list(keys), "skipped": list(skipped or [])}


class ShardLoader:
    """An iterable of batches {"image": (B,3,H,W) float, "label": (B,) long, "key": list[str]} with len().

    The dataset yields collated batches (in DataLoader workers if num_workers > 0: one transfer per
    batch); a short batch (a training worker's last one) waits here until short ones fill a batch,
    so the rank yields exactly len() batches however the samples spread over workers.
    """

    def __init__(self, samples: IterableDataset, batch_size: int, num_batches: int, num_samples: int,
                 num_workers: int):
        self.samples, self.batch_size, self.num_workers = samples, batch_size, num_workers
        self.num_batches, self.num_samples = num_batches, num_samples  # this rank's

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[dict]:
        source: Iterable = self.samples
        if self.num_workers > 0:
            source = DataLoader(self.samples, batch_size=None, num_workers=self.num_workers)
        produced, pending = 0, []
        for chunk in source:
            if len(chunk["key"]) == self.batch_size:
                ready = chunk
            else:  # a short chunk: wait until the short ones fill a batch
                pending.append(chunk)
                if sum(len(c["key"]) for c in pending) < self.batch_size:
                    continue
                merged = _concat(pending)
                ready = _take(merged, 0, self.batch_size)
                pending = [_take(merged, self.batch_size, len(merged["key"]))] if len(merged["key"]) > self.batch_size else []
            yield ready
            produced += 1
            if produced == self.num_batches:
                return
        if pending:  # evaluation's last, short batch
            yield _concat(pending)
            produced += 1
        if produced != self.num_batches:  # the shards disagree with index.csv: fail loudly, never hang DDP
            raise RuntimeError(f"expected {self.num_batches} batches, the shards gave {produced}; re-run prepare")


def _concat(chunks: list[dict]) -> dict:
    """One batch of several; every tensor field (image, label, and side/aug/slot on the device path)
    is concatenated."""
    if len(chunks) == 1:
        return chunks[0]
    out = {name: torch.cat([c[name] for c in chunks]) for name, v in chunks[0].items() if isinstance(v, torch.Tensor)}
    return out | {"key": [k for c in chunks for k in c["key"]], "skipped": [s for c in chunks for s in c["skipped"]]}


def _take(batch: dict, start: int, stop: int) -> dict:
    out = {name: v[start:stop] for name, v in batch.items() if isinstance(v, torch.Tensor)}
    return out | {"key": batch["key"][start:stop],
                  "skipped": batch["skipped"] if start == 0 else []}  # reported once, with the first piece


class TrainLoader(ShardLoader):
    """Training batches for one epoch; `set_epoch` re-deals the shards and re-seeds the shuffles."""

    samples: _TrainSamples

    def __init__(self, *args, shards: list[tuple[str, int]], seed: int, rank: int, world_size: int,
                 rebalance: Callable[[int], tuple[Callable[[str], int], list[tuple[str, int]]]] | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self._shards, self._seed, self._rank, self._world = shards, seed, rank, world_size
        self._rebalance = rebalance  # class-balanced: epoch -> (copies per key, shard sizes in copies)
        self.epoch = 0

    def assignment(self, epoch: int) -> list[list[tuple[str, int]]]:
        """(shard path, samples) per rank for `epoch`; identical on every rank."""
        shards = list(self._shards)
        random.Random(f"{self._seed}:{epoch}").shuffle(shards)
        return [[shards[i] for i in dealt] for dealt in balance([n for _, n in shards], self._world)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self._rebalance is not None:  # each epoch draws its own copies (same total, so same len())
            self.samples.keep, self._shards = self._rebalance(epoch)
        self.samples.shards = self.assignment(epoch)[self._rank]
        self.samples.budget = self.num_samples
        self.samples.seed = f"{self._seed}:{epoch}:{self._rank}"


def _check_split(batch_size: int, rank: int, world_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


def _shard_counts(manifest: Manifest, parts, keep: Callable[[str], int]) -> list[tuple[str, int]]:
    """(shard: absolute path as str, or RemotePath; samples passing `keep`, or their copies) for the
    shards of `parts`, from index.csv."""
    counts: dict[str, int] = {}
    for row in manifest.rows(parts):
        if copies := int(keep(row.key)):
            counts[row.shard] = counts.get(row.shard, 0) + copies
    paths = [p for part in manifest.check_parts(parts) for p in manifest.parts[part]]
    return [(_shard_ref(p), counts[p.name]) for p in paths if counts.get(p.name)]


def train_batches(
    manifest: Manifest,
    parts: str | Iterable[str],
    batch_size: int,
    transform: Callable,
    *,
    epoch: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    exclude_keys: frozenset[str] | set[str] = frozenset(),
    shuffle_buffer: int = 1000,
    class_balanced: bool = False,
    source=None,
) -> TrainLoader:
    """One epoch of shuffled training batches for this rank (shard-level split, see the module docstring).

    len() = max(1, n // (batch_size * world_size)) on every rank, n = samples of `parts` not in
    `exclude_keys`; each rank yields exactly that many full batches. If n < batch_size * world_size,
    the single batch holds n // world_size samples. Create one loader per epoch, or call `set_epoch`.
    class_balanced: every class equally often in the epoch (module docstring, 6); n = K x (n // K).
    source: a decoded cache (cache.py) that replaces reading and decoding the shards.
    """
    _check_split(batch_size, rank, world_size)
    keep = _KeyFilter(None, frozenset(exclude_keys))
    parts = manifest.check_parts(parts)
    if class_balanced:
        labels = {r.key: r.label for r in manifest.rows(parts) if keep(r.key)}

        def rebalance(e: int) -> tuple[_Copies, list[tuple[str, int]]]:
            copies = _Copies(class_balanced_copies(labels, seed, e))
            return copies, _shard_counts(manifest, parts, copies)

        keep, shards = rebalance(epoch)
    else:
        rebalance, shards = None, _shard_counts(manifest, parts, keep)
    n = sum(c for _, c in shards)
    if n < world_size:
        raise ValueError(f"{manifest.root}: parts {parts} have {n} samples left, fewer than {world_size} ranks")
    needed = world_size * max(1, num_workers)
    if len(shards) < needed:
        raise ValueError(
            f"{manifest.root}: parts {parts} have {len(shards)} shard(s) with training samples, fewer than "
            f"world_size x max(1, num_workers) = {world_size} x {max(1, num_workers)} = {needed}: each rank and "
            f"worker reads whole shards. Re-run prepare with --samples-per-shard <= {max(1, n // needed)} "
            f"or use fewer data workers (data.num_workers)")
    num_batches = max(1, n // (batch_size * world_size))
    per_rank = min(num_batches * batch_size, n // world_size)
    samples = _TrainSamples(transform, keep, shuffle_buffer, min(batch_size, per_rank), manifest.num_classes)
    samples.sizes, samples.source, samples.labels = manifest.shard_sizes(), source, manifest.shard_labels()
    loader = TrainLoader(samples, min(batch_size, per_rank), num_batches, per_rank, num_workers,
                         shards=shards, seed=seed, rank=rank, world_size=world_size, rebalance=rebalance)
    loader.set_epoch(epoch)
    return loader


def eval_batches(
    manifest: Manifest,
    parts: str | Iterable[str],
    batch_size: int,
    transform: Callable,
    *,
    rank: int = 0,
    world_size: int = 1,
    include_keys: Iterable[str] | None = None,
    exclude_keys: frozenset[str] | set[str] = frozenset(),
    num_workers: int = 0,
    source=None,
) -> ShardLoader:
    """Deterministic, un-shuffled batches; every selected sample exactly once across all ranks.

    Selected = in `parts`, in `include_keys` (if given), not in `exclude_keys`. Rank r gets the
    selected samples with index i % world_size == r, in shard order (independent of num_workers);
    the last batch may be short. len() may DIFFER between ranks (by at most one batch): callers
    must gather results (e.g. accelerate's gather_for_metrics / gather_object) rather than step in
    lock-step, and can de-duplicate by `key`.
    """
    _check_split(batch_size, rank, world_size)
    keep = _KeyFilter(None if include_keys is None else frozenset(include_keys), frozenset(exclude_keys))
    selected: dict[str, int] = {}
    for r in manifest.rows(parts):
        if keep(r.key):
            selected[r.shard] = selected.get(r.shard, 0) + 1
    n = sum(selected.values())
    per_rank = len(range(rank, n, world_size))
    order = [p for part in manifest.check_parts(parts) for p in manifest.parts[part]]
    samples = _EvalSamples(order, transform, rank=rank, world_size=world_size, keep=keep, batch_size=batch_size)
    samples.num_classes, samples.sizes, samples.selected = manifest.num_classes, manifest.shard_sizes(), selected
    samples.labels = manifest.shard_labels()
    samples.source = source
    return ShardLoader(samples, batch_size, -(-per_rank // batch_size), per_rank, num_workers)
