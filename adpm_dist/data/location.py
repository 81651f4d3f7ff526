"""Where shards live: a local directory, `file://`, `http(s)://`, `s3://bucket/prefix`, or `pipe:CMD`.

Every place that takes a shards location (data.shards, --shards, prepare/publish --out) goes
through `as_location`: a local directory stays a `pathlib.Path` (read with the built-in `open`,
exactly as before), anything else becomes a `RemotePath`, which joins file names like a Path
(`root / "manifest.json"`) and prints without secrets (`str()` strips user:password@ and query
values), so error messages, logs and run summaries can print it as they print a Path.

Opening streams: fsspec, not webdataset's gopen. Why:
- one interface for file, http(s) and s3 (s3fs, which takes its endpoint and credentials from the
  standard AWS chain: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ~/.aws/config, instance roles; so MinIO,
  Ceph and other S3-compatible stores work), and gs://, az://, ... for free when their package is
  installed;
- it can answer "does this shard exist?" cheaply (one listing per S3 prefix, one HEAD per HTTP
  file), which lets a missing shard fail when the manifest is loaded instead of mid-training;
- in-process (aiohttp/botocore): no `curl` or `aws` binary on every node, no process per shard,
  and a real exception type to retry on.
gopen is still what opens `pipe:CMD` (webdataset's Pipe checks the command's exit status), so
WebDataset users keep their familiar form. A `pipe:` location is a command with `{file}` where the
file name goes, e.g. `pipe:curl -sSf http://host/shards/{file}` or `pipe:aws s3 cp s3://b/p/{file} -`.

Each shard is streamed by the worker that reads it (one GET per shard over HTTP, so servers without
Range support, such as `python -m http.server`, work); nothing is downloaded whole first. A
dropped connection is retried (ADPM_SHARD_RETRIES times, default 3, exponential backoff from
ADPM_SHARD_BACKOFF seconds, default 1): the stream is re-opened and resumes at the byte offset it
had reached (seek where the store allows it, otherwise skip the bytes already read), so the samples
come out exactly as from an unbroken stream. Then it fails naming the URL and the byte offset; the
tar reader adds the sample key. A stalled connection counts as dropped after ADPM_SHARD_TIMEOUT
seconds without a byte (default 120). A stream that ends before the tar end-of-archive marker (an
HTTP body without Content-Length closed early ends like a complete one) is re-opened the same way
when the tar reader asks (RetryingStream.resume_after_eof).
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit, urlunsplit

PIPE = "pipe:"
PLACEHOLDER = "{file}"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
STREAM_BUFFER = 1 << 20  # bytes read from the network per call; tar headers are then served from memory


class ShardReadError(OSError):
    """A remote stream failed for good (after its retries); the message names the URL, never a secret."""


def redact(url: str) -> str:
    """`url` safe to print: user:password@ becomes ***@ and every query value ***.

    Presigned URLs carry their signature in the query and HTTP basic auth in the user info; both
    are credentials, and run logs, configs and checkpoints outlive them.
    """
    if url.startswith(PIPE) or not _URL.match(url):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(f"{k}=***" if sep else k for k, sep, _ in (q.partition("=") for q in parts.query.split("&") if q))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class RemotePath:
    """A file or directory that is not on a local file system, joined like a Path.

    `url` is the full address (may hold credentials: use it only to open); `str()` and `repr()`
    are redacted. Picklable, so DataLoader workers started with 'spawn' receive it.
    """

    def __init__(self, url: str, name: str | None = None):
        self.url = url
        self._name = name  # the file name a pipe: command was filled in with

    def __truediv__(self, name: str) -> RemotePath:
        if self.url.startswith(PIPE):
            if PLACEHOLDER not in self.url:
                raise ValueError(f"{self}: a pipe: shards location needs {PLACEHOLDER} where the file name goes, "
                                 f"e.g. 'pipe:curl -sSf http://host/shards/{PLACEHOLDER}'")
            return RemotePath(self.url.replace(PLACEHOLDER, name), name)
        parts = urlsplit(self.url)
        return RemotePath(urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + name)))

    @property
    def name(self) -> str:
        if self._name is not None or self.url.startswith(PIPE):
            return self._name or ""
        return urlsplit(self.url).path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def protocol(self) -> str:
        return "pipe" if self.url.startswith(PIPE) else urlsplit(self.url).scheme.lower()

    def __str__(self) -> str:
        return redact(self.url)

    def __repr__(self) -> str:
        return f"RemotePath({redact(self.url)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)


Location = Path | RemotePath


def is_remote(location: str | os.PathLike | RemotePath) -> bool:
    """True for http(s)://, s3://, pipe:, ... (anything but a local path or file://)."""
    if isinstance(location, RemotePath):
        return True
    text = os.fspath(location)
    return text.startswith(PIPE) or (bool(_URL.match(text)) and not text.lower().startswith("file://"))


def as_location(location: str | os.PathLike | RemotePath) -> Location:
    """A local path (absolute) or a RemotePath. `file:///abs/dir` is a local path."""
    if isinstance(location, (Path, RemotePath)):
        return location.resolve() if isinstance(location, Path) else location
    text = os.fspath(location)
    if text.lower().startswith("file://"):
        return Path(urlsplit(text).path).resolve()
    return RemotePath(text.rstrip("/") if _URL.match(text) else text) if is_remote(text) else Path(text).resolve()


# -- fsspec --------------------------------------------------------------------------------------

def _storage_options(protocol: str) -> dict:
    if protocol in ("http", "https"):
        import aiohttp

        # No total timeout: a large shard may legitimately stream for longer than aiohttp's default
        # 5 minutes; a stalled connection (a server that stops sending without closing) is caught by
        # sock_read instead, ADPM_SHARD_TIMEOUT seconds without a byte, then retried like a dropped
        # one. trust_env: proxies and ~/.netrc credentials from the environment, so no password has
        # to sit in the URL.
        stall = float(os.environ.get("ADPM_SHARD_TIMEOUT", "120"))
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(30.0, stall), sock_read=stall)
        return {"client_kwargs": {"timeout": timeout, "trust_env": True}}
    return {}


def filesystem(location: RemotePath):
    """(fsspec filesystem, path for it) of a remote location (not pipe:)."""
    from fsspec.core import url_to_fs

    return url_to_fs(location.url, **_storage_options(location.protocol))


def _open_raw(location: RemotePath) -> BinaryIO:
    if location.protocol == "pipe":
        from webdataset.gopen import gopen_pipe

        return gopen_pipe(location.url, "rb", bufsize=STREAM_BUFFER)
    fs, path = filesystem(location)
    if location.protocol in ("http", "https"):
        # One streaming GET, no Range requests needed. size=-1 skips fsspec's HEAD, which reports any
        # failure, a refused connection included, as FileNotFoundError; the GET tells a 404 (not found:
        # fail at once) from a connection problem (retried).
        return fs.open(path, "rb", block_size=0, size=-1)
    return fs.open(path, "rb")


def _transient_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, TimeoutError]
    try:
        import aiohttp

        errors.append(aiohttp.ClientError)
    except ImportError:
        pass
    try:
        from fsspec.exceptions import FSTimeoutError

        errors.append(FSTimeoutError)
    except ImportError:
        pass
    return tuple(errors)


def _retry_settings() -> tuple[int, float]:
    return int(os.environ.get("ADPM_SHARD_RETRIES", "3")), float(os.environ.get("ADPM_SHARD_BACKOFF", "1.0"))


def wait_before_retry(failures: int, backoff: float) -> None:
    """Exponential backoff after the `failures`-th failure in a row: backoff, 2 x backoff, 4 x ..."""
    time.sleep(backoff * 2 ** (failures - 1))


class RetryingStream(io.RawIOBase):
    """A read-only stream that survives dropped connections: re-open, go back to the offset reached, go on.

    `opener()` returns a fresh stream from byte 0; after a transient error the stream is re-opened
    up to `retries` times (sleeping backoff, 2 x backoff, ...) and positioned at the offset already
    delivered, by seek() if the new stream can, else by reading and dropping that many bytes.
    """

    def __init__(self, opener: Callable[[], BinaryIO], name: str, retries: int | None = None,
                 backoff: float | None = None):
        super().__init__()
        default_retries, default_backoff = _retry_settings()
        self._opener, self._name = opener, name
        self.retries = default_retries if retries is None else retries
        self.backoff = default_backoff if backoff is None else backoff
        self.offset = 0
        self._early_ends = 0  # resume_after_eof calls since data last arrived
        self._errors = _transient_errors()
        self._stream: BinaryIO | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        failures = 0
        while True:
            try:
                if self._stream is None:
                    self._stream = self._opener()
                    self._skip_to_offset(self._stream)
                data = self._stream.read(len(buffer))
                break
            except FileNotFoundError:  # not transient: say so at once (fsspec's message may hold the raw URL)
                self._drop_stream()
                raise FileNotFoundError(f"{self._name} not found") from None
            except PermissionError as exc:
                self._drop_stream()
                raise PermissionError(f"{self._name}: access denied ({type(exc).__name__})") from None
            except self._errors as exc:
                failures += 1
                self._drop_stream()
                if failures > self.retries:
                    raise ShardReadError(f"{self._name}: stream failed at byte {self.offset} after {self.retries} "
                                         f"retries ({type(exc).__name__}: {redact(str(exc))})") from None
                wait_before_retry(failures, self.backoff)
        buffer[: len(data)] = data
        self.offset += len(data)
        if data:
            self._early_ends = 0
        return len(data)

    def resume_after_eof(self) -> bool:
        """The reader says the stream ended too early (an HTTP body without Content-Length, closed by
        the server mid-shard, ends like a complete one): re-open it at the offset reached, as after a
        dropped connection. False once `retries` re-opens in a row brought no byte: it really ends there."""
        self._early_ends += 1
        if self._early_ends > self.retries:
            return False
        self._drop_stream()
        wait_before_retry(self._early_ends, self.backoff)
        return True

    def _skip_to_offset(self, stream: BinaryIO) -> None:
        if self.offset == 0:
            return
        seekable = getattr(stream, "seekable", lambda: False)
        try:
            if seekable():
                stream.seek(self.offset)
                return
        except (OSError, ValueError):
            pass
        left = self.offset
        while left:
            chunk = stream.read(min(left, STREAM_BUFFER))
            if not chunk:
                raise OSError(f"{self._name}: shorter than the {self.offset} bytes already read")
            left -= len(chunk)

    def _drop_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:  # a broken connection or a failed pipe may also fail to close
                pass

    def close(self) -> None:
        if not self.closed:
            try:
                if self._stream is not None:
                    self._stream.close()  # a pipe: raises here if its command failed
            finally:
                self._stream = None
                super().close()


def open_binary(location: Location) -> BinaryIO:
    """A buffered binary stream over a local file or a remote one (with retries)."""
    if isinstance(location, Path):
        return open(location, "rb", buffering=STREAM_BUFFER)
    raw = RetryingStream(lambda: _open_raw(location), str(location))
    return io.BufferedReader(raw, buffer_size=STREAM_BUFFER)


def read_bytes(location: Location) -> bytes:
    """The whole (small) file: manifest.json, index.csv. FileNotFoundError if it is not there."""
    if isinstance(location, Path):
        return location.read_bytes()
    with open_binary(location) as f:
        return f.read()


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status behind fsspec's FileNotFoundError, if an answer came (None: no answer, e.g. a timeout)."""
    return getattr(exc.__cause__, "status", None)


def _http_head_ok(fs, location: RemotePath) -> bool:
    """Whether an HTTP file exists, asked with HEAD (fsspec's exists() would start a GET of the whole shard).

    fsspec's info() reports every failure as FileNotFoundError, a timeout or a 503 included; only a
    404/410 answer means "not there". Anything else is retried like a dropped stream, then named as
    a failed check, never as a missing shard.
    """
    retries, backoff = _retry_settings()
    path = filesystem(location)[1]
    for attempt in range(retries + 1):
        try:
            fs.info(path)
            return True
        except FileNotFoundError as exc:
            status = _http_status(exc)
            if status in (404, 410) or exc.__cause__ is None:  # no cause: fsspec found it absent itself
                return False
            if status in (401, 403):
                raise PermissionError(f"{location}: access denied (HTTP {status})") from None
            error = exc.__cause__
        if attempt < retries:
            wait_before_retry(attempt + 1, backoff)
    reason = f"HTTP {status}" if status else f"{type(error).__name__}: {redact(str(error))}"
    raise ShardReadError(f"{location}: could not check that it exists after {retries} retries ({reason})")


def missing(locations: Iterable[Location]) -> list[Location]:
    """The files among `locations` that do not exist, checked cheaply and all at once.

    S3 and other listable stores: one listing per directory (prefix). HTTP has no listing: one HEAD
    per file, 16 at a time. pipe: cannot be checked without running the command (reported present).
    """
    locations = list(locations)
    local = [p for p in locations if isinstance(p, Path)]
    remote = [p for p in locations if isinstance(p, RemotePath) and p.protocol != "pipe"]
    absent = [p for p in local if not p.is_file()]
    if not remote:
        return absent
    fs, _ = filesystem(remote[0])
    if remote[0].protocol in ("http", "https"):
        with ThreadPoolExecutor(16) as pool:
            present = list(pool.map(lambda p: _http_head_ok(fs, p), remote))
        return absent + [p for p, ok in zip(remote, present) if not ok]
    listed: dict[str, set[str]] = {}
    for p in remote:
        path = filesystem(p)[1]
        parent = path.rsplit("/", 1)[0]
        if parent not in listed:
            try:
                listed[parent] = {fs._strip_protocol(x).rstrip("/") for x in fs.ls(parent, detail=False, refresh=True)}
            except FileNotFoundError:
                listed[parent] = set()
        if fs._strip_protocol(path) not in listed[parent]:
            absent.append(p)
    return absent
