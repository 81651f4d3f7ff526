"""Decode once (`data.cache=host|device`): every sample's decoded uint8 square, kept for the whole run.

Filled up front, before the first epoch, by one pass over every shard of the manifest (each image
decoded exactly once; samples another process of the node already decoded are skipped). After that
no epoch reads a tar or decodes an image: the loaders walk the recorded per-shard key order instead
of the tars, so which samples each rank and worker sees, and in what order, is unchanged
(stream.py plans from index.csv either way).

What is stored per sample: its centre square (the part of the stored image every transform uses;
a crop is a slice, so nothing is resampled) at the top left of a P x P x 3 canvas, P = the shards'
stored size (manifest.image_size), plus its side, label and status. Cost: P*P*3 + 13 bytes per
sample (256 px: 196,621 B; 32 px: 3,085 B); `cache_bytes` says it for a manifest.

host:   one file in /dev/shm (np.memmap, MAP_SHARED) per node: its name comes from the shards'
        checksums, the size and the user, so the ranks of a node and every DataLoader worker map
        the same pages (one copy per node, not per worker or rank); the first process creates and
        fills it under a file lock, the others find it filled. Its space is reserved
        (posix_fallocate) before anything is decoded into it: a cache that does not fit is refused
        in one line (CacheTooLarge) instead of dying with SIGBUS halfway, when another run's cache
        took the room meanwhile. Every process that uses it holds a shared flock on its `.users`
        file; the last one to exit removes both. A file left by a killed run (nobody holds
        `.users`) is reused by the next run, which then removes it when it ends; a reservation a
        killed run was making (`.adpm-cache-*.PID`) is deleted.
device: the squares in one uint8 tensor on the training device (each rank its own); the loader
        then carries only slot numbers and DeviceFeed gathers the pixels there.

Bad samples: a sample that fails to decode is recorded with its BadSample reason and raised again
wherever it is streamed, so training skips and reports it as without the cache.
"""
from __future__ import annotations

import atexit
import fcntl
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError
from ..files import pid_alive
from . import stream
from .device_augment import CachedRef, centre_square_array
from .location import RemotePath
from .manifest import Manifest

SHM = Path("/dev/shm")
EMPTY, OK, BAD = 0, 1, 2
HEADER_BYTES = 1 + 4 + 8  # status uint8, side int32, label int64


class CacheTooLarge(ConfigError):
    """The cache does not fit where it was asked for; the message names both sizes (a ConfigError: one
    line, exit 2 from launch/train.py, and the failed start leaves nothing behind)."""


def cache_bytes(num_samples: int, canvas: int) -> int:
    """Bytes a cache of `num_samples` squares of `canvas` px takes (pixels + per-sample header)."""
    return num_samples * (canvas * canvas * 3 + HEADER_BYTES)


def largest_dataset(available_bytes: float, canvas: int) -> int:
    """How many samples of `canvas` px a cache holds in `available_bytes`."""
    return int(available_bytes // (canvas * canvas * 3 + HEADER_BYTES))


def host_available() -> int:
    """Bytes a host cache may take: the smaller of /dev/shm's free space and MemAvailable."""
    st = os.statvfs(SHM)
    return min(st.f_bavail * st.f_frsize, _mem_available())


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def device_available(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return _mem_available()  # a CPU "device": host memory


def check_fits(where: str, needed: int, available: int, num_samples: int, canvas: int) -> None:
    if needed > available:
        raise CacheTooLarge(
            f"data.cache={where}: {num_samples} images x {canvas}x{canvas}x3 B need {needed / 1e9:.2f} GB, "
            f"{available / 1e9:.2f} GB available; use data.cache=none (or host instead of device)")


def shard_name(ref) -> str:
    return ref.name if isinstance(ref, RemotePath) else Path(ref).name


@dataclass
class Arrays:
    """The cache's arrays (numpy; host: views of one shared /dev/shm file)."""
    status: np.ndarray
    side: np.ndarray
    label: np.ndarray
    pixels: np.ndarray | None  # (N, P, P, 3) uint8; None when the pixels live on the device


def _map(path: Path, n: int, canvas: int, mode: str) -> Arrays:
    offsets = np.cumsum([0, n, 4 * n, 8 * n])
    mm = np.memmap(path, dtype=np.uint8, mode=mode)
    return Arrays(mm[offsets[0]:offsets[1]], mm[offsets[1]:offsets[2]].view(np.int32),
                  mm[offsets[2]:offsets[3]].view(np.int64),
                  mm[offsets[3]:offsets[3] + n * canvas * canvas * 3].reshape(n, canvas, canvas, 3))


def _shm_path(manifest: Manifest, canvas: int) -> Path:
    """The node-wide name of a manifest's cache: its location, the shards' checksums and, for local
    files, their size and mtime (a shard rewritten in place gets a new cache)."""
    ident = [str(canvas), str(os.getuid()), str(manifest.root), manifest.dataset]
    ident += [f"{s['file']}:{s['sha256']}" for part in sorted(manifest.shards) for s in manifest.shards[part]]
    for paths in manifest.parts.values():
        ident += [f"{st.st_size}:{st.st_mtime_ns}" for st in (os.stat(p) for p in paths if isinstance(p, Path))]
    return SHM / f"adpm-cache-{hashlib.sha256(' '.join(ident).encode()).hexdigest()[:20]}"


def _open_shared(path: Path, size: int) -> tuple[bool, int]:
    """(created, fd) of the shared file; created atomically (a zero-filled sparse file linked in)."""
    try:
        return False, os.open(path, os.O_RDWR)
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)  # reserved now: a sparse file would die with SIGBUS when tmpfs is full
    except OSError as e:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        free = os.statvfs(path.parent)
        raise CacheTooLarge(f"data.cache=host: cannot reserve {size / 1e9:.2f} GB in {path.parent} "
                            f"({os.strerror(e.errno)}; {free.f_bavail * free.f_frsize / 1e9:.2f} GB free there); use "
                            "data.cache=none, or free /dev/shm") from None
    try:
        os.link(tmp, path)
        created = True
    except FileExistsError:  # another rank won the race: use its file
        os.close(fd)
        fd, created = os.open(path, os.O_RDWR), False
    finally:
        tmp.unlink()
    return created, fd


@dataclass
class CacheSource:
    """What the loaders use instead of the shards (stream.py's `source`): read(shard) walks the
    recorded keys, decode(sample) returns the cached square (or a CachedRef for a device cache).
    Pickles without the pixels: a worker started with 'spawn' re-maps the shared file."""
    n: int
    canvas: int
    order: dict[str, list[tuple[str, str, int]]]       # shard name -> [(key, url, slot)] in tar order
    bad: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # slot -> (shard, key, reason)
    path: Path | None = None                           # host: the shared file
    arrays: Arrays | None = None
    decoded: int = 0                                   # images this process decoded to fill it

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.path is not None:
            state["arrays"] = None  # re-mapped from `path` in the worker
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.arrays is None and self.path is not None:
            self.arrays = _map(self.path, self.n, self.canvas, "r+")

    def read(self, shard):
        for key, url, slot in self.order[shard_name(shard)]:
            yield {"__key__": key, "__url__": url, "__slot__": slot}

    def decode(self, sample: dict, num_classes: int | None = None):
        slot = sample["__slot__"]
        if self.arrays.status[slot] == BAD:
            raise stream.BadSample(*self.bad[slot])
        side = int(self.arrays.side[slot])
        label = int(self.arrays.label[slot])
        if self.arrays.pixels is None:
            return CachedRef(slot, side), label, sample["__key__"]
        return self.arrays.pixels[slot, :side, :side], label, sample["__key__"]


def _fill(source: CacheSource, manifest: Manifest, put) -> int:
    """One pass over every shard: record the key order, decode what is not cached yet. Returns the
    number of images decoded. put(slot, square) stores one square."""
    slots = {row.key: i for i, row in enumerate(manifest.index)}
    labels = manifest.shard_labels()
    a, decoded = source.arrays, 0
    for part in manifest.parts:
        for ref in manifest.parts[part]:
            entries = source.order.setdefault(shard_name(ref), [])
            for sample in stream.read_shard(stream._shard_ref(ref)):
                stream.check_identity(ref, sample, labels.get(shard_name(ref), {}), manifest.num_classes)
                key, url = str(sample["__key__"]), str(sample.get("__url__"))
                if key not in slots:
                    raise ValueError(f"{ref}: sample {key!r} is not in index.csv; re-run prepare")
                slot = slots[key]
                entries.append((key, url, slot))
                if a.status[slot] != EMPTY and (a.status[slot] == OK or slot in source.bad):
                    continue
                try:
                    image, label, _ = stream.decode_sample(sample, manifest.num_classes)
                except stream.BadSample as bad:
                    source.bad[slot] = (bad.shard, bad.key, bad.reason)
                    a.status[slot] = BAD
                    continue
                decoded += 1
                square = centre_square_array(image)
                if square.shape[0] > source.canvas:  # shards of another tool: stored larger than the manifest says
                    from PIL import Image
                    square = np.asarray(Image.fromarray(np.ascontiguousarray(square)).resize(
                        (source.canvas, source.canvas), Image.Resampling.BILINEAR))
                put(slot, square)
                a.side[slot], a.label[slot] = square.shape[0], label
                a.status[slot] = OK  # last: a slot reads as filled only once its pixels are in
    return decoded


def canvas_of(manifest: Manifest, image_size: int) -> int:
    """P: the stored shorter side the manifest promises (prepare's --image-size), else the training size."""
    return int(manifest.image_size or image_size)


def host_cache(manifest: Manifest, canvas: int) -> CacheSource:
    """The node's shared cache of `manifest`, filled (by this process or one before it)."""
    n = len(manifest.index)
    size = cache_bytes(n, canvas)
    path = _shm_path(manifest, canvas)
    remove_dead_reservations(path.parent)
    if not path.exists():
        check_fits("host", size, host_available(), n, canvas)
    users = join_users(path)  # before the file is opened: its last user removes it
    try:
        created, fd = _open_shared(path, size)
    except BaseException:  # refused (CacheTooLarge): leave no `.users` file behind
        leave_users(users, path)
        raise
    atexit.register(leave_users, users, path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one process of the node fills; the others wait, then find it full
        source = CacheSource(n, canvas, {}, path=path, arrays=_map(path, n, canvas, "r+"))

        def put(slot, square):
            source.arrays.pixels[slot, :square.shape[0], :square.shape[1]] = square
        source.decoded = _fill(source, manifest, put)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    return source


def users_path(path: Path) -> Path:
    return path.with_name(path.name + ".users")


def join_users(path: Path) -> int:
    """Hold a shared flock on the cache's `.users` file for this process's lifetime (its forked loader
    workers share it); a cache file nobody holds is a killed run's, taken over by this run."""
    fd = os.open(users_path(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if path.exists():
            print(f"data.cache=host: reusing {path}, left by a run that was killed; removed when this run ends",
                  flush=True)
    except BlockingIOError:
        pass
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def leave_users(fd: int, path: Path) -> None:
    """At exit: the last user of the cache removes it (and its `.users` file)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)  # another process still maps it
        return
    path.unlink(missing_ok=True)
    users_path(path).unlink(missing_ok=True)
    os.close(fd)


def remove_dead_reservations(directory: Path) -> list[Path]:
    """`.adpm-cache-*.PID` files whose process is gone: a reservation a killed run was making (they hold
    their reserved memory until deleted); and `.users` files nobody holds, of a cache that is gone."""
    removed = []
    for p in directory.glob("adpm-cache-*.users"):
        if not p.with_name(p.name.removesuffix(".users")).exists():
            fd = os.open(p, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                p.unlink(missing_ok=True)
                removed.append(p)
            except BlockingIOError:
                pass
            finally:
                os.close(fd)
    for p in directory.glob(".adpm-cache-*.*"):
        pid = p.name.rsplit(".", 1)[1]
        if pid.isdigit() and not pid_alive(int(pid)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def device_cache(manifest: Manifest, canvas: int, device) -> tuple[CacheSource, torch.Tensor]:
    """(source for the loaders, (N,P,P,3) uint8 pixels on `device`), filled in this process."""
    device = torch.device(device)
    n = len(manifest.index)
    check_fits("device", cache_bytes(n, canvas), device_available(device), n, canvas)
    pixels = torch.zeros(n, canvas, canvas, 3, dtype=torch.uint8, device=device)
    arrays = Arrays(np.zeros(n, np.uint8), np.zeros(n, np.int32), np.zeros(n, np.int64), None)
    source = CacheSource(n, canvas, {}, arrays=arrays)

    def put(slot, square):
        pixels[slot, :square.shape[0], :square.shape[1]] = torch.from_numpy(np.array(square, order="C")).to(device)
    source.decoded = _fill(source, manifest, put)
    return source, pixels
