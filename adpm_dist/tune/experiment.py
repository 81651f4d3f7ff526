"""One search on disk: shards, the base config, every trial's config, and `search.json`.

Layout of an experiment directory (``--output``)::

    search.json            what was searched (grid, base config, trials); the evaluator reads it
    shards/                digits-LT shards prepared for the folds (only when --shards is not given)
    trials/<trial id>/     run.output_dir of one trial: config.yaml, metrics.json, checkpoints/, train.log,
                           attempts.jsonl (one line per start: retries are visible)
    ray_results/           Ray Tune's own experiment state
    cv_results.csv, summary.md, heatmap.png, best.yaml, protocol.json   written by the consolidating evaluator

No Ray imports here: everything is checked before a cluster is started.
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
from .contract import CV_RESERVED, Experiment, OneEpochPlan, apply_settings, check_reserved, cv_settings, trial_dir
from .contract import supports_resume  # noqa: F401  (where callers have imported it from)
from .grid import Trial, build_trials, label, noise_candidate
from .protocol import HELD_OUT, NESTED, choose_protocol
from .study.spec import Candidate
from .study.trials import point_settings

SEARCH_FORMAT = "adpm-dist-search/1"
SEARCH_FILE = "search.json"
SELECTION = {
    HELD_OUT: "mean macro-F1 over the CV folds' evaluation parts; the fixed test part is left for best.yaml",
    NESTED: "per outer fold k: mean macro-F1 over the inner CV on the other folds; the estimate is the "
            "selected points' scores on their outer folds",
}

# Keys each grid trial sets itself (contract.CV_RESERVED and the grid's noise); overriding them would break it.
RESERVED_KEYS = CV_RESERVED | {
    "noise.alpha": "use --alphas",
    "noise.beta": "use --betas",
}


@dataclass
class SearchSpec:
    """What to run, as every CLI parses it, as plain data; `alphas`/`betas` are the grid's only."""
    dataset: str
    config: str                 # YAML path (resolved by the caller)
    output: str                 # experiment directory
    folds: int | None = None    # None: from --shards, else 5
    shards: str | None = None   # None: prepare digits-LT under output/shards
    overrides: list[str] = dataclasses.field(default_factory=list)
    alphas: list[float] = dataclasses.field(default_factory=list)  # the noise grid's axes
    betas: list[float] = dataclasses.field(default_factory=list)

    @property
    def out(self) -> Path:
        return Path(self.output).resolve()  # Ray changes the working directory: absolute paths only


def check_overrides(overrides: list[str]) -> None:
    check_reserved(overrides, RESERVED_KEYS, "search")


def base_config(spec: SearchSpec, shards: Path, reserved: dict[str, str] | None = None, who: str = "search") -> Config:
    """The config shared by every trial: YAML < key=value overrides < absolute shard path. `reserved`: the
    kind's own keys (default the grid's), refused as overrides.

    The path is set as a value, not as `data.shards=...` text: YAML would cut it at " #" and
    retype it ("2024" -> int) on the way.
    """
    check_reserved(spec.overrides, RESERVED_KEYS if reserved is None else reserved, who)
    cfg = load_config(spec.config, spec.overrides)
    set_key(cfg, "data.shards", str(shards))
    return cfg


def trial_settings(candidate: Candidate, trial: Trial, folds: int, out: Path) -> dict:
    """Dotted key -> typed value for what a grid trial sets itself: its candidate's point (the method, the
    noise), then the CV settings; a study's trial sets the same (study/trials.py point_settings)."""
    return point_settings(candidate, trial.point, None) | cv_settings(trial, folds, out)


def trial_config(base: Config, trial: Trial, out: Path, folds: int) -> Config:
    """The base config with this trial's settings applied as values (set_key), never re-parsed from text."""
    candidate = noise_candidate([trial.alpha], [trial.beta], base.method)
    return apply_settings(base, trial_settings(candidate, trial, folds, out), trial.title)


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


@dataclass
class Search(OneEpochPlan):
    """A planned noise grid (a contract.Experiment): the `adpm` preset's candidate (grid.noise_candidate, with
    the config's method), the resolved base config and the trials still to run."""
    spec: SearchSpec
    shards: Path
    folds: int
    base: Config
    trials: list[Trial]          # every trial of the grid that is trained (alpha = 0: first beta only)
    todo: list[Trial]            # the ones without results yet (all of them unless resuming)
    protocol: str = HELD_OUT     # protocol.py: held_out_test, or nested for fold-only shards

    @property
    def out(self) -> Path:
        return self.spec.out

    @property
    def candidate(self) -> Candidate:
        return noise_candidate(self.spec.alphas, self.spec.betas, self.base.method)

    def config_of(self, trial: Trial) -> Config:
        return apply_settings(self.base, self.settings_of(trial), trial.title)

    def settings_of(self, trial: Trial) -> dict:
        """What the trial sets itself (search.trial_payloads hands it over)."""
        return trial_settings(self.candidate, trial, self.folds, self.out)

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
            "parts": shard_parts(self.shards),
            "protocol": self.protocol,
            "candidates": [self.candidate.to_dict()],  # the study preset the grid is
            "trials": [t.to_dict() for t in self.trials],
            "selection": SELECTION[self.protocol],
            "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        }


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


def plan_search(spec: SearchSpec, shards: Path, folds: int, resume: bool) -> Search:
    """Resolve configs (failing on bad keys before any cluster starts) and decide what to run.

    Without `resume`, an experiment directory that already holds a search is refused (its trial
    directories would be mixed with the new ones). With `resume`, the stored base config must equal
    the new one, and trials with metrics.json (or stopped early by ASHA) are not run again.
    """
    out = spec.out
    base = base_config(spec, shards)
    protocol = protocol_for(shards, folds, "search")
    search = Search(spec, shards, folds, base, build_trials(spec.alphas, spec.betas, folds, nested=protocol == NESTED),
                    [], protocol)
    for t in search.trials[:1]:
        search.config_of(t)  # exercises every per-trial key once
    check_stored(out, base, resume)
    search.todo = still_to_run(out, search.trials, search.config_of, resume)
    return search


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
