"""What makes a finished run reusable: its fingerprint, the code that produced it, and the check
every reuser makes (benchmarks/quality.py, benchmarks/levers.py, tune --resume, consolidation).

metrics.json is the "done" marker of a run (written atomically, last). It carries
``config_fingerprint`` (a hash of the settings that can change results: config.NON_RESULT_KEYS are
left out), ``data_fingerprint`` (a hash of the manifest's shard checksums) and ``code_version``. A
reuser that would run a configuration differently from what a directory holds re-runs it or refuses,
naming the keys that differ (``stale_keys``).
"""
from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from pathlib import Path

import yaml

from ..config import Config, changed_keys, config_fingerprint

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def code_version() -> str:
    """The package version and, in a git checkout, the commit (with ``-dirty`` for local changes)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        base = version("adpm-dist")
    except PackageNotFoundError:
        base = "unknown"
    try:
        described = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=PACKAGE_ROOT,
                                   capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return base
    return f"{base}+{described}" if described else base


def data_fingerprint(shards: dict[str, list[dict]]) -> str:
    """A short hash of the manifest's shard list (file names, sample counts, sha256 per part)."""
    return hashlib.sha256(json.dumps(shards, sort_keys=True).encode()).hexdigest()[:16]


def run_record(cfg: Config, shards: dict[str, list[dict]]) -> dict:
    return {"config_fingerprint": config_fingerprint(cfg), "data_fingerprint": data_fingerprint(shards),
            "code_version": code_version()}


def stale_keys(run_dir: str | Path, cfg: Config) -> list[str] | None:
    """None when ``run_dir`` holds no finished run; else the result-changing keys in which its saved
    config differs from ``cfg`` ([] = the run is what ``cfg`` would produce and can be reused)."""
    run_dir = Path(run_dir)
    metrics, saved = run_dir / "metrics.json", run_dir / "config.yaml"
    if not metrics.is_file():
        return None
    if not saved.is_file():
        return ["<config.yaml missing>"]
    try:
        recorded = json.loads(metrics.read_text()).get("config_fingerprint")
    except ValueError:
        return None  # unreadable: not a finished record
    if recorded is not None and recorded == config_fingerprint(cfg):
        return []
    # A fingerprint can differ while no setting does: keys added since, at their defaults (which keep
    # the old behaviour). The saved config decides then, key by key.
    return changed_keys(yaml.safe_load(saved.read_text()) or {}, cfg)


def data_identity(shards: dict[str, list[dict]], dataset: str = "") -> dict:
    """What a checkpoint records of its data: the whole-manifest fingerprint and, per part, its sample
    and shard counts and a fingerprint, so that a resume on other data can say which part differs."""
    parts = {part: {"samples": sum(int(s.get("num_samples", 0)) for s in listed), "shards": len(listed),
                    "fingerprint": data_fingerprint({part: listed})} for part, listed in shards.items()}
    return {"dataset": dataset, "fingerprint": data_fingerprint(shards), "parts": parts}


def data_differences(saved: dict, now: dict) -> list[str]:
    """How ``now`` (data_identity) differs from ``saved``, one phrase per difference ([] = same data)."""
    if saved.get("fingerprint") == now.get("fingerprint"):
        return []
    out = [f"dataset {saved['dataset']!r} -> {now['dataset']!r}"] if saved.get("dataset") != now.get("dataset") else []
    old, new = saved.get("parts", {}), now.get("parts", {})
    for part in sorted(old.keys() | new.keys()):
        a, b = old.get(part), new.get(part)
        if a is None or b is None:
            out.append(f"part {part!r} {'added' if a is None else 'missing'}")
        elif a["fingerprint"] != b["fingerprint"]:
            out.append(f"part {part!r}: {a['samples']} samples in {a['shards']} shard(s) -> {b['samples']} in "
                       f"{b['shards']}" + ("" if (a["samples"], a["shards"]) != (b["samples"], b["shards"])
                                           else " (same counts, other content)"))
    return out or ["the manifest's shard list"]
