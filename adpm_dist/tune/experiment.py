"""One search on disk: shards, the base config, every trial's config, and `search.json`.

Layout of an experiment directory (``--output``)::

    search.json            what was searched (grid, base config, trials); the evaluator reads it
    shards/                digits-LT shards prepared for the folds (only when --shards is not given)
    trials/<trial id>/     run.output_dir of one trial: config.yaml, metrics.json, checkpoints/, train.log,
                           attempts.jsonl (one line per start: retries are visible)
    ray_results/           Ray Tune's own experiment state
    cv_results.csv, summary.md, heatmap.png, best.yaml   written by the consolidating evaluator

No Ray imports here: everything is checked before a cluster is started.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, ConfigError, TrainConfig, load_config, set_key, to_dict
from .grid import Trial, build_trials, label

SEARCH_FORMAT = "adpm-dist-search/1"
SEARCH_FILE = "search.json"

# Keys each trial sets itself; overriding them by key=value would silently break the protocol.
RESERVED_KEYS = {
    "noise.alpha": "use --alphas",
    "noise.beta": "use --betas",
    "data.eval_part": "each trial evaluates fold k; use --folds",
    "data.train_parts": "each trial trains on the other folds",
    "data.shards": "use --shards",
    "run.output_dir": "use --output",
}


@dataclass
class SearchSpec:
    """What to search; everything a CLI parses, as plain data."""
    dataset: str
    config: str                 # YAML path (resolved by the caller)
    output: str                 # experiment directory
    alphas: list[float]
    betas: list[float]
    folds: int | None = None    # None: from --shards, else 5
    shards: str | None = None   # None: prepare digits-LT under output/shards
    overrides: list[str] = dataclasses.field(default_factory=list)

    @property
    def out(self) -> Path:
        return Path(self.output).resolve()  # Ray changes the working directory: absolute paths only


def check_overrides(overrides: list[str]) -> None:
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in RESERVED_KEYS:
            raise ConfigError(f"{key} is set by the search for every trial ({RESERVED_KEYS[key]})")


def supports_resume() -> bool:
    """engine.train can continue a killed run from its last checkpoint (train.resume=auto)."""
    return "resume" in {f.name for f in dataclasses.fields(TrainConfig)}


def trial_dir(out: Path, trial: Trial) -> Path:
    return out / "trials" / trial.id


def base_config(spec: SearchSpec, shards: Path) -> Config:
    """The config shared by every trial: YAML < key=value overrides < absolute shard path."""
    check_overrides(spec.overrides)
    return load_config(spec.config, [*spec.overrides, f"data.shards={shards}"])


def trial_config(base: Config, trial: Trial, out: Path) -> Config:
    """The base config with this trial's noise, folds and (stable across retries) output directory."""
    cfg = copy.deepcopy(base)
    set_key(cfg, "noise.alpha", trial.alpha)
    set_key(cfg, "noise.beta", trial.beta)
    set_key(cfg, "data.eval_part", trial.eval_part)
    set_key(cfg, "data.train_parts", [])  # every part but the evaluation part and the fixed `test`
    set_key(cfg, "run.output_dir", str(trial_dir(out, trial)))
    if supports_resume():
        set_key(cfg, "train.resume", "auto")  # a retried trial continues from its last checkpoint
    return cfg


def flat(d: dict, prefix: str = "") -> dict:
    items = {}
    for k, v in d.items():
        if isinstance(v, dict):
            items.update(flat(v, f"{prefix}{k}."))
        else:
            items[f"{prefix}{k}"] = v
    return items


def config_differences(old: dict, new: dict) -> list[str]:
    a, b = flat(old), flat(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


@dataclass
class Search:
    """A planned search: the grid, the resolved base config and the trials still to run."""
    spec: SearchSpec
    shards: Path
    folds: int
    base: Config
    trials: list[Trial]          # every trial of the grid that is trained (alpha = 0: first beta only)
    todo: list[Trial]            # the ones without results yet (all of them unless resuming)

    @property
    def out(self) -> Path:
        return self.spec.out

    def config_of(self, trial: Trial) -> Config:
        return trial_config(self.base, trial, self.out)

    def manifest(self) -> dict:
        return {
            "format": SEARCH_FORMAT,
            "dataset": self.spec.dataset,
            "config": str(Path(self.spec.config).resolve()),
            "overrides": list(self.spec.overrides),
            "shards": str(self.shards),
            "folds": self.folds,
            "alphas": [{"value": a, "label": label(a)} for a in self.spec.alphas],
            "betas": [{"value": b, "label": label(b, fraction=False)} for b in self.spec.betas],
            "base_config": to_dict(self.base),
            "trials": [t.to_dict() for t in self.trials],
            "selection": "mean macro-F1 over the CV folds' evaluation parts",
            "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        }


def finished(out: Path, trial: Trial) -> bool:
    return (trial_dir(out, trial) / "metrics.json").is_file()


def early_stopped(out: Path, trial: Trial) -> bool:
    return (trial_dir(out, trial) / "early_stopped.json").is_file()


def plan_search(spec: SearchSpec, shards: Path, folds: int, resume: bool) -> Search:
    """Resolve configs (failing on bad keys before any cluster starts) and decide what to run.

    Without `resume`, an experiment directory that already holds a search is refused (its trial
    directories would be mixed with the new ones). With `resume`, the stored base config must equal
    the new one, and trials with metrics.json (or stopped early by ASHA) are not run again.
    """
    out = spec.out
    base = base_config(spec, shards)
    trials = build_trials(spec.alphas, spec.betas, folds)
    for t in trials[:1]:
        trial_config(base, t, out)  # exercises every per-trial key once
    stored = out / SEARCH_FILE
    if stored.is_file() and not resume:
        raise FileExistsError(f"{out} already holds a search ({SEARCH_FILE}): pass --resume to continue it, "
                              f"--consolidate-only to re-evaluate it, or choose another --output")
    if stored.is_file():
        old = json.loads(stored.read_text())["base_config"]
        diff = config_differences(old, to_dict(base))
        if diff:
            raise ValueError(f"--resume: the training config differs from the one stored in {stored} "
                             f"({'; '.join(diff)}); use the same --config/overrides or another --output")
    todo = [t for t in trials if not (resume and (finished(out, t) or early_stopped(out, t)))]
    return Search(spec, shards, folds, base, trials, todo)


def write_search(search: Search) -> Path:
    search.out.mkdir(parents=True, exist_ok=True)
    path = search.out / SEARCH_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(search.manifest(), indent=2) + "\n")
    tmp.replace(path)
    return path


def load_search(out: str | Path) -> dict:
    path = Path(out) / SEARCH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {out} is not a search directory "
                                f"(written by python tune/search_noise.py --output {out})")
    data = json.loads(path.read_text())
    if data.get("format") != SEARCH_FORMAT:
        raise ValueError(f"{path}: unsupported format {data.get('format')!r}, expected {SEARCH_FORMAT!r}")
    return data
