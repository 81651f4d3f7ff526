"""Tar shards without the webdataset import: a deterministic writer and a fast sample reader.

The files are ordinary WebDataset shards (`{key}.{ext}` members, the members of one sample
adjacent), so `webdataset.WebDataset(urls)` reads them too (tested). The BYTES come from the
ecosystem's openers (location.open_binary: the built-in open for a local file, fsspec for http(s)
and s3, webdataset's gopen for pipe:); only the member parsing is ours, because:
- writing with the stdlib keeps `prepare` and its worker processes free of the torch import
  that `import webdataset` brings (seconds per process on a busy machine);
- reading: webdataset's own iterator (tariterators.tar_file_iterator + group_by_keys, i.e.
  Python's tarfile) is about ten times slower than parsing the 512-byte headers directly.
  Measured 2026-12-02 on the digits-LT shards (1,797 samples, 29 shards, 2 shared cores), the
  same files opened the same way, 3 rounds: this parser 93,000-186,000 samples/s, webdataset's
  8,800-15,000 samples/s (the brief allowed at most 10% slower). This reader also closes its file
  when the consumer stops early (no ResourceWarning) and names the URL and sample key when a
  remote stream fails for good.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .location import Location, RemotePath, RetryingStream, ShardReadError, as_location, open_binary

BLOCK = 512
_OWNER = "adpm"


class TruncatedShard(ShardReadError):
    """A shard that ends before its tar end-of-archive marker: storage damage or a cut transfer.

    Never read as a shorter shard: the samples after the cut would vanish from every epoch unnoticed
    (training would refill the epoch by re-reading the others)."""

    def __init__(self, url: str, byte: int, where: str, done: int | None = None, last: str | None = None,
                 expected: int | None = None):
        lost = "" if done is None else _lost(done, last, expected)
        super().__init__(f"{url}: truncated at byte {byte} ({where}), before the tar end-of-archive marker{lost}")
        self.url, self.byte, self.where, self.done, self.last = url, byte, where, done, last

    def against(self, expected: int | None) -> TruncatedShard:
        """The same error, saying how many of the manifest's `expected` samples are missing."""
        return TruncatedShard(self.url, self.byte, self.where, self.done, self.last, expected)


class ShardCountError(ShardReadError):
    """A complete shard whose sample count is not the one its manifest lists (replaced or edited)."""


def check_count(url: str, done: int, expected: int | None) -> None:
    if expected is not None and done != expected:
        raise ShardCountError(f"{url}: {done} samples, its manifest lists {expected}: the shard is not the one "
                              f"prepare wrote (re-run prepare, or copy the shard again)")


class TarSampleWriter:
    """Append samples {"__key__": str, ext: bytes, ...} to an open binary file, reproducibly.

    Fixed mtime/owner/mode make the same samples give byte-identical tars; PAX format allows keys
    longer than 100 characters.
    """

    def __init__(self, fileobj: BinaryIO):
        self._tar = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT)

    def write(self, sample: dict) -> None:
        key = sample["__key__"]
        for ext in sorted(k for k in sample if not k.startswith("__")):
            data = sample[ext]
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o444
            info.uname = info.gname = _OWNER
            self._tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        self._tar.close()


def _number(field: bytes) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # GNU base-256 encoding for sizes >= 8 GiB
        return int.from_bytes(field[1:], "big", signed=field[:1] == b"\xff")
    field = field.split(b"\0", 1)[0].strip()
    return int(field, 8) if field else 0


def _pax_path(data: bytes) -> str | None:
    path = None
    while data:  # records: b"<len> <key>=<value>\n"
        length = int(data.split(b" ", 1)[0])
        key, _, value = data[: length - 1].split(b" ", 1)[1].partition(b"=")
        if key == b"path":
            path = value.decode("utf-8")
        data = data[length:]
    return path


def _resume(f: BinaryIO) -> bool:
    """After a short read: may the stream be re-opened at the offset reached and read on? Only a
    remote stream can (location.RetryingStream: an HTTP body without Content-Length that closed early
    looks like a clean end of file); a local file that ends early is simply cut short."""
    raw = getattr(f, "raw", None)
    return isinstance(raw, RetryingStream) and raw.resume_after_eof()


def _read(f: BinaryIO, n: int) -> bytes:
    """`n` bytes, or fewer only if the stream really ends there (remote ones re-opened first)."""
    data = f.read(n)
    while len(data) < n and _resume(f):
        data += f.read(n - len(data))
    return data


def iter_members(f: BinaryIO, url: str = "<stream>") -> Iterator[tuple[str, bytes]]:
    """(name, data) of each regular file in a tar stream, in order, up to the end-of-archive marker.

    A stream that ends before that marker (a file cut short, at a member boundary or inside one, or
    a connection closed early) raises TruncatedShard naming `url`, the byte and where it ends; a
    ShardReadError from the stream (a remote one that failed for good) gets `member` set: the name
    of the member being read, or the name of the last one read if it failed between members.
    """
    long_name: str | None = None
    member: str | None = None
    offset = 0  # bytes consumed: where a truncation is reported
    try:
        while True:
            header = _read(f, BLOCK)
            if header == b"\0" * BLOCK:  # end-of-archive marker: every member is there
                return
            if len(header) < BLOCK:
                where = "inside a tar header" if header else "between members"
                raise TruncatedShard(url, offset + len(header), where)
            size, kind = _number(header[124:136]), header[156:157]
            regular = kind in (b"0", b"\0", b"7")
            if regular:
                member = long_name or _header_name(header)
            data = _read(f, size)
            padding = _read(f, -size % BLOCK)  # up to the next 512-byte block
            if len(data) < size or len(padding) < -size % BLOCK:
                where = ("inside a tar extended header" if not regular else f"inside member {member!r}"
                         if len(data) < size else f"in the padding after member {member!r}")
                raise TruncatedShard(url, offset + BLOCK + len(data) + len(padding), where)
            offset += BLOCK + size + len(padding)
            if kind == b"x":  # PAX extended header: applies to the next member
                long_name = _pax_path(data) or long_name
            elif kind == b"L":  # GNU long name
                long_name = data.rstrip(b"\0").decode("utf-8")
            elif regular:
                long_name = None
                yield member, data
            elif kind != b"g":  # directories, links, ...: not sample members (a global header changes nothing)
                long_name = None
    except TruncatedShard:
        raise
    except ShardReadError as exc:
        exc.member = member
        raise


def _header_name(header: bytes) -> str:
    name = header[:100].split(b"\0", 1)[0].decode("utf-8")
    prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
    return f"{prefix.decode('utf-8')}/{name}" if prefix else name


def split_name(name: str) -> tuple[str, str]:
    """WebDataset's rule: the key is everything before the first dot of the base name."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1 :])


def read_samples(path: str | Path | Location, expected: int | None = None) -> Iterator[dict]:
    """Samples {"__key__", "__url__", ext: bytes, ...} of one shard, in order; closes the file when done.

    `path`: a local file, or any location `as_location` takes (http(s)://, s3://, pipe:...). A
    remote stream that fails after its retries raises ShardReadError naming the URL and the key of
    the sample being read. A shard cut short raises TruncatedShard (the sample it cut is not
    yielded) saying how many samples it gave and, with `expected` (the manifest's count), how many
    were lost; a complete shard with another count than `expected` raises ShardCountError.
    """
    location = as_location(path) if isinstance(path, str) else path
    url = str(location) if isinstance(location, RemotePath) else str(path)  # a remote one redacted
    sample: dict = {}
    done, last = 0, None  # complete samples yielded, the key of the last one
    try:
        with open_binary(location) as f:
            for name, data in iter_members(f, url):
                key, ext = split_name(name)
                if sample and key != sample["__key__"]:
                    yield sample
                    done, last = done + 1, sample["__key__"]
                    sample = {}
                if not sample:
                    sample = {"__key__": key, "__url__": url}
                sample[ext] = data
            if sample:
                yield sample
                done += 1
    except TruncatedShard as exc:
        raise TruncatedShard(exc.url, exc.byte, exc.where, done, last, expected) from None
    except ShardReadError as exc:
        member = getattr(exc, "member", None)
        where = "before its first sample" if member is None else f"while reading sample {split_name(member)[0]!r}"
        raise ShardReadError(f"{exc}; {where}") from None
    check_count(url, done, expected)


def _lost(done: int, last: str | None, expected: int | None) -> str:
    """What a truncation cost, for its message: the samples delivered and those not (the sample being
    read when the shard ended is not delivered: nothing says whether more of its members followed)."""
    upto = f" (up to {last!r})" if last else ""
    if expected is None:
        return f"; read: the first {done} sample(s){upto}"
    return f"; read: the first {done} of its {expected} samples{upto}; not read: {max(expected - done, 0)}"
