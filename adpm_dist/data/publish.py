"""Publish a local shard directory to where a cluster reads it: an S3 bucket, a shared file system.

    python -m adpm_dist.data.publish LOCAL_DIR s3://bucket/prefix [--verify] [--jobs 8]
    python -m adpm_dist.data.publish LOCAL_DIR /shared/fs/dir     # or file:///shared/fs/dir
    python -m adpm_dist.data.prepare --dataset NAME ... --out s3://bucket/prefix   # prepare + publish

Order: shards first, then index.csv, then manifest.json LAST, so a reader never sees a manifest
naming a shard that is not there yet. If the target already holds a different manifest, that one is
deleted before anything is uploaded (the prefix then reads as "incomplete", as a local directory
does while prepare rewrites it), and the shards it named that the new one does not are deleted
after the new manifest has landed.

Idempotent: re-running uploads only the shards whose (name, sha256) the target's manifest does not
already list with the same size; a run interrupted before its manifest landed re-uploads them all
(correct, only slower). `--verify` then streams every remote shard and checks it against the
manifest (sha256, sample count and keys), as `prepare --verify` does for a local directory.

S3 endpoint and credentials come from the standard AWS chain (AWS_ENDPOINT_URL, AWS_PROFILE,
~/.aws/credentials, instance roles): nothing secret goes on the command line. HTTP servers are
read-only to us: copy the directory into the server's document root instead (docs/data.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .location import Location, RemotePath, as_location, filesystem, read_bytes
from .manifest import INDEX_NAME, MANIFEST_NAME, load_manifest, verify_shards


class _Target:
    """put / size / delete of files in the target directory, local or fsspec."""

    def __init__(self, location: Location):
        self.location = location
        if isinstance(location, RemotePath):
            if location.protocol in ("http", "https", "pipe"):
                raise ValueError(f"{location}: cannot publish to {location.protocol}: (read-only for us); copy the "
                                 f"directory into the web server's document root instead (docs/data.md)")
            self.fs, self.root = filesystem(location)
        else:
            location.mkdir(parents=True, exist_ok=True)

    def _remote(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def size(self, name: str) -> int | None:
        if isinstance(self.location, Path):
            p = self.location / name
            return p.stat().st_size if p.is_file() else None
        try:
            return int(self.fs.info(self._remote(name))["size"])
        except FileNotFoundError:
            return None

    def put(self, local: Path, name: str) -> None:
        if isinstance(self.location, Path):  # copy under a temporary name, then rename: atomic on one file system
            tmp = self.location / f".{name}.tmp"
            shutil.copyfile(local, tmp)
            os.replace(tmp, self.location / name)
        else:  # one PUT (or a multipart upload completed at the end): an object appears whole or not at all
            self.fs.put_file(str(local), self._remote(name))

    def delete(self, name: str) -> None:
        if isinstance(self.location, Path):
            (self.location / name).unlink(missing_ok=True)
        else:
            try:
                self.fs.rm_file(self._remote(name))
            except FileNotFoundError:
                pass
            self.fs.invalidate_cache()


def _remote_manifest(target: Location) -> dict | None:
    try:
        return json.loads(read_bytes(target / MANIFEST_NAME))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):  # a corrupt manifest: treat the target as holding nothing we know
        return None


def _listed(data: dict | None) -> dict[str, str]:
    """file -> sha256 of the shards a manifest names."""
    if not data:
        return {}
    try:
        return {s["file"]: s["sha256"] for v in data["parts"].values() for s in v["shards"]}
    except (KeyError, TypeError, AttributeError):
        return {}


def publish(local_dir: str | os.PathLike, url: str | os.PathLike | RemotePath, *, jobs: int = 8,
            log=print) -> dict:
    """Upload a prepared shard directory to `url` (shards, index, manifest last). Returns counts
    {"uploaded", "skipped", "deleted"}."""
    manifest = load_manifest(local_dir)  # refuse to publish an incomplete or inconsistent directory
    local = Path(manifest.root)
    location = as_location(url)
    if isinstance(location, Path) and location == local:
        raise ValueError(f"publish: {local} is both the source and the target")
    target = _Target(location)
    new_bytes = (local / MANIFEST_NAME).read_bytes()
    old = _remote_manifest(location)
    old_shards, new_shards = _listed(old), _listed(json.loads(new_bytes))
    if old is not None and json.dumps(old, sort_keys=True) != json.dumps(json.loads(new_bytes), sort_keys=True):
        target.delete(MANIFEST_NAME)  # the target is about to change: make it read as incomplete meanwhile

    def needed(name: str) -> bool:
        same = old_shards.get(name) == new_shards[name]
        return not (same and target.size(name) == (local / name).stat().st_size)

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        todo = [n for n, need in zip(new_shards, pool.map(needed, list(new_shards))) if need]
        log(f"publish {local} -> {location}: {len(todo)} shard(s) to upload, {len(new_shards) - len(todo)} already there")
        list(pool.map(lambda n: target.put(local / n, n), todo))
    target.put(local / INDEX_NAME, INDEX_NAME)
    target.put(local / MANIFEST_NAME, MANIFEST_NAME)  # last: from now on readers see the complete directory
    stale = sorted(set(old_shards) - set(new_shards))
    for name in stale:
        target.delete(name)
    log(f"published {len(new_shards)} shard(s) + {INDEX_NAME} + {MANIFEST_NAME} to {location}"
        + (f"; deleted {len(stale)} stale shard(s)" if stale else ""))
    return {"uploaded": len(todo), "skipped": len(new_shards) - len(todo), "deleted": len(stale)}


def verify_remote(url: str | os.PathLike | RemotePath, log=print) -> int:
    """Stream every shard at `url` and check it against its manifest; 0 if all is well, 1 otherwise."""
    try:
        manifest = load_manifest(url)
        summary = verify_shards(manifest)
    except (ValueError, OSError) as exc:
        log(f"verify FAILED: {exc}")
        return 1
    log(f"verify OK: {summary['shards']} shards, {summary['samples']} samples at {manifest.root} match its "
        f"{MANIFEST_NAME} (sha256, counts, keys)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m adpm_dist.data.publish", description=__doc__.split("\n")[0])
    ap.add_argument("local_dir", help="a shard directory written by python -m adpm_dist.data.prepare")
    ap.add_argument("url", help="s3://bucket/prefix, a directory, or file:///dir")
    ap.add_argument("--verify", action="store_true", help="then stream the remote shards and check their sha256")
    ap.add_argument("--jobs", type=int, default=8, help="parallel uploads (default 8)")
    args = ap.parse_args(argv)
    try:
        publish(args.local_dir, args.url, jobs=args.jobs)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return verify_remote(args.url) if args.verify else 0


if __name__ == "__main__":
    sys.exit(main())
