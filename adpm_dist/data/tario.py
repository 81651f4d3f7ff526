"""Tar shards without the webdataset import: a deterministic writer and a fast sample reader.

The files are ordinary WebDataset shards (`{key}.{ext}` members, the members of one sample
adjacent), so `webdataset.WebDataset(urls)` reads them too (tested). We do our own I/O because:
- writing with the stdlib keeps `prepare` and its worker processes free of the torch import
  that `import webdataset` brings (seconds per process on a busy machine);
- reading: Python's tarfile (behind webdataset's tar_file_expander) costs ~0.18 ms per member
  on this machine (STACK_FACTS 5: 5,665 samples/s for the tar walk alone); parsing the 512-byte
  headers directly is several times cheaper, and the reader closes its file when the consumer
  stops early (no ResourceWarning).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

BLOCK = 512
_OWNER = "adpm"


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


def iter_members(f: BinaryIO, url: str = "<stream>") -> Iterator[tuple[str, bytes]]:
    """(name, data) of each regular file in a tar stream, in order."""
    long_name: str | None = None
    while True:
        header = f.read(BLOCK)
        if len(header) < BLOCK or header == b"\0" * BLOCK:
            if header.strip(b"\0"):
                raise ValueError(f"{url}: truncated tar header")
            return
        size, kind = _number(header[124:136]), header[156:157]
        data = f.read(size)
        if len(data) < size:
            raise ValueError(f"{url}: truncated tar member")
        f.read(-size % BLOCK)  # padding up to the next 512-byte block
        if kind == b"x":  # PAX extended header: applies to the next member
            long_name = _pax_path(data) or long_name
        elif kind == b"L":  # GNU long name
            long_name = data.rstrip(b"\0").decode("utf-8")
        elif kind in (b"0", b"\0", b"7"):
            name = long_name
            if name is None:
                name = header[:100].split(b"\0", 1)[0].decode("utf-8")
                prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
                if prefix:
                    name = f"{prefix.decode('utf-8')}/{name}"
            long_name = None
            yield name, data
        elif kind != b"g":  # directories, links, ...: not sample members (a global header changes nothing)
            long_name = None


def split_name(name: str) -> tuple[str, str]:
    """WebDataset's rule: the key is everything before the first dot of the base name."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1 :])


def read_samples(path: str | Path) -> Iterator[dict]:
    """Samples {"__key__", "__url__", ext: bytes, ...} of one shard, in order; closes the file when done."""
    with open(path, "rb", buffering=1 << 20) as f:
        sample: dict = {}
        for name, data in iter_members(f, str(path)):
            key, ext = split_name(name)
            if sample and key != sample["__key__"]:
                yield sample
                sample = {}
            if not sample:
                sample = {"__key__": key, "__url__": str(path)}
            sample[ext] = data
        if sample:
            yield sample
