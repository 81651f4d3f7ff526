"""One experiment on disk, whatever its kind: shards, the base config, `search.json`, what is left to run.

Layout of an experiment directory (``--output``)::

    search.json            what was searched (grid, base config, trials); the evaluator reads it
    shards/                digits-LT shards prepared for the folds (only when --shards is not given)
    trials/<trial id>/     run.output_dir of one trial: config.yaml, metrics.json, checkpoints/, train.log,
                           attempts.jsonl (one line per start: retries are visible)
    ray_results/           Ray Tune's own experiment state
    cv_results.csv, summary.md, heatmap.png, best.yaml, protocol.json   written by the consolidating evaluator

Every planner (the noise grid, grid.py; --fit, fit_plan.py; a study, study/plan.py) resolves its base
config, protocol and --resume decisions here. No Ray imports here: everything is checked before a cluster
is started.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, flatten, load_config, set_key, to_dict
from ..files import atomic_write_json
from ..runtime.record import stale_keys
from .contract import Experiment, Trial, check_reserved, trial_dir
from .contract import supports_resume  # noqa: F401  (where callers have imported it from)
from .protocol import NESTED, choose_protocol

SEARCH_FORMAT = "adpm-dist-search/1"
SEARCH_FILE = "search.json"
@dataclass
class SearchSpec:
    """What to run, as every CLI parses it, as plain data; a kind's own axes extend it (grid.GridSpec)."""
    dataset: str
    config: str                 # YAML path (resolved by the caller)
    output: str                 # experiment directory
    folds: int | None = None    # None: from --shards, else 5
    shards: str | None = None   # None: prepare digits-LT under output/shards
    overrides: list[str] = dataclasses.field(default_factory=list)

    @property
    def out(self) -> Path:
        return Path(self.output).resolve()  # Ray changes the working directory: absolute paths only


def base_config(spec: SearchSpec, shards: Path, reserved: dict[str, str], who: str = "search") -> Config:
    """The config shared by every trial: YAML < key=value overrides < absolute shard path. `reserved`: the
    kind's own keys, refused as overrides.

    The path is set as a value, not as `data.shards=...` text: YAML would cut it at " #" and
    retype it ("2024" -> int) on the way.
    """
    check_reserved(spec.overrides, reserved, who)
    cfg = load_config(spec.config, spec.overrides)
    set_key(cfg, "data.shards", str(shards))
    return cfg


def manifest_of(spec: SearchSpec, shards: Path | str, folds: int, base: Config, protocol: str, mode: str | None,
                **kind) -> dict:
    """search.json of a CV experiment: what every kind records (the spec, shards and their parts, the base
    config, the protocol), then the kind's own `kind` fields (grid, alphas, candidates, trials, ...). `mode`
    names the kind's evaluator (evaluator.py); None for the noise grid, whose search.json never had one."""
    head = {"format": SEARCH_FORMAT} | ({} if mode is None else {"mode": mode})
    return head | {"dataset": spec.dataset, "config": str(Path(spec.config).resolve()),
                   "overrides": list(spec.overrides), "shards": str(shards), "folds": folds,
                   "base_config": to_dict(base), "parts": shard_parts(shards), "protocol": protocol} | kind | {
        "written": time.strftime("%Y-%m-%d %H:%M:%S")}


def shard_parts(shards: Path | str) -> list[str]:
    """The part names in the shards' manifest.json, local or at a URL ([] if unreadable: the caller decides)."""
    from ..data.location import as_location, read_bytes

    try:
        return list(json.loads(read_bytes(as_location(shards) / "manifest.json").decode("utf-8"))["parts"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def config_differences(old: dict, new: dict) -> list[str]:
    a, b = flatten(old), flatten(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def finished(out: Path, trial: Trial, cfg: Config | None = None) -> bool:
    """A trial with a metrics.json; with ``cfg``, one that ``cfg`` would reproduce, else a ValueError
    naming the keys it was trained with differently (its figure must not mix into this search)."""
    run_dir = trial_dir(out, trial)
    if cfg is None:
        return (run_dir / "metrics.json").is_file()
    stale = stale_keys(run_dir, cfg)
    if stale:
        raise ValueError(f"--resume: {run_dir} finished with a config that differs in {', '.join(stale)} from what "
                         "this search would run; use another --output, or delete that trial to re-run it")
    return stale == []


def early_stopped(out: Path, trial: Trial) -> bool:
    return (trial_dir(out, trial) / "early_stopped.json").is_file()


def protocol_for(shards: Path | str, folds: int, what: str) -> str:
    """The protocol the shards call for (protocol.choose_protocol), refusing too few folds for it; `what`
    names the kind of study in the message. Shared by every planner (grid, study)."""
    parts = shard_parts(shards)
    if not parts:
        raise FileNotFoundError(f"{shards}/manifest.json is missing or lists no parts: not a shard directory")
    protocol = choose_protocol(parts)
    if folds < 2:
        raise ValueError(f"--folds must be >= 2 (each trial trains on the other folds), got {folds}")
    if protocol == NESTED and folds < 3:
        raise ValueError(f"{shards} has no `test` part, so the {what} runs nested CV, which needs >= 3 folds "
                         f"(an outer test fold and >= 2 inner folds); got {folds}")
    return protocol


def still_to_run(out: Path, trials: list, config_of, resume: bool) -> list:
    """Every trial, or with `resume` those without metrics.json that ASHA did not stop. finished() refuses
    a trial trained with another config than `config_of(trial)` (its figure must not mix in)."""
    if not resume:
        return list(trials)
    return [t for t in trials if not (finished(out, t, config_of(t)) or early_stopped(out, t))]


def check_stored(out: Path, base: Config, resume: bool, mode: str = "grid") -> None:
    """Refuse to mix a new search into `out`'s old one: without `resume`, or with another base config or mode."""
    stored = out / SEARCH_FILE
    if stored.is_file() and not resume:
        raise FileExistsError(f"{out} already holds a search ({SEARCH_FILE}): pass --resume to continue it, "
                              f"--consolidate-only to re-evaluate it, or choose another --output")
    if not stored.is_file():
        return
    data = json.loads(stored.read_text())
    if data.get("mode", "grid") != mode:
        raise ValueError(f"--resume: {stored} holds a {data.get('mode', 'grid')} search, this is a {mode} search "
                         f"(--fit or not must match); choose another --output")
    diff = config_differences(with_todays_defaults(data["base_config"]), to_dict(base))
    if diff:
        raise ValueError(f"--resume: the training config differs from the one stored in {stored} "
                         f"({'; '.join(diff)}); use the same --config/overrides or another --output")


def with_todays_defaults(stored: dict) -> dict:
    """A stored config with the keys added to the package since then at their defaults (an upgrade that adds
    an off-by-default key must not refuse the --resume of an earlier experiment); as stored if it no
    longer reads (the difference is then named key by key)."""
    from ..config import ConfigError, from_dict

    try:
        return to_dict(from_dict(stored))
    except (ConfigError, ValueError, TypeError, KeyError):
        return stored


def write_search(search: Experiment) -> Path:
    search.out.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(search.out / SEARCH_FILE, search.manifest())


def load_search(out: str | Path) -> dict:
    path = Path(out) / SEARCH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {out} is not a search directory "
                                f"(written by python tune/search_noise.py --output {out})")
    data = json.loads(path.read_text())
    if data.get("format") != SEARCH_FORMAT:
        raise ValueError(f"{path}: unsupported format {data.get('format')!r}, expected {SEARCH_FORMAT!r}")
    return data
