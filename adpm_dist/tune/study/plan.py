"""A study planned: candidates x points x seeds x folds as trials, and what is left to run.

Trials are shaped like the grid's (id, fold, outer, eval_part, train_folds, to_dict), so the same Ray
runner (tune/search.py), trainable, per-fold early stopping and progress table run them. With a `test`
part every trial is a CV trial (train on the other folds, score fold k); on fold-only shards a
candidate with more than one point also gets the inner trials of nested CV (outer fold k left out as
well), so that each outer fold's point is chosen without fold k. A candidate with one point has
nothing to choose: its CV trials are its estimate, and it costs no inner trial.

No Ray imports here: everything is checked before a cluster starts.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...config import Config, ConfigError, set_key, to_dict
from ..experiment import (SEARCH_FILE, SEARCH_FORMAT, SearchSpec, base_config, check_stored, protocol_for,
                          shard_parts, still_to_run, supports_resume, trial_dir)
from ..protocol import NESTED
from .spec import Candidate, Point

STUDY_MODE = "study"
STUDY_RESERVED = {
    "method": "use --methods",
    "run.seed": "use --seeds",
    "data.eval_part": "each trial evaluates fold k; use --folds",
    "data.train_parts": "each trial trains on the other folds",
    "data.shards": "use --shards",
    "run.output_dir": "use --output",
}


@dataclass(frozen=True)
class StudyTrial:
    candidate: str
    point: str          # Point.label
    seed: int
    fold: int
    outer: int | None = None

    @property
    def id(self) -> str:
        outer = "" if self.outer is None else f"outer{self.outer}_"
        return f"{outer}{self.candidate}_{self.point}_seed{self.seed}_fold{self.fold}"

    @property
    def eval_part(self) -> str:
        return f"fold{self.fold}"

    def train_folds(self, folds: int) -> list[str]:
        return [f"fold{k}" for k in range(folds) if k not in (self.fold, self.outer)]

    def to_dict(self) -> dict:
        # alpha/beta/labels: what the progress table's "best so far" groups by (candidate, point)
        return asdict(self) | {"id": self.id, "eval_part": self.eval_part, "alpha": 0.0, "beta": 0.0,
                               "alpha_label": self.candidate, "beta_label": self.point,
                               "group": f"{self.candidate} {self.point}"}


@dataclass
class Study:
    """Duck-typed like experiment.Search for search.run_search: out, base, trials, todo, config_of, manifest."""
    spec: SearchSpec
    shards: Path | str
    folds: int
    seeds: list[int]
    base: Config
    candidates: list[Candidate]
    protocol: str
    trials: list[StudyTrial] = field(default_factory=list)
    todo: list[StudyTrial] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)     # trial ids left out by --max-trials
    budget: dict = field(default_factory=dict)            # max_trials / budget_hours as asked
    reference: str | None = None                          # the candidate every other is compared with (CE)

    @property
    def out(self) -> Path:
        return self.spec.out

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)

    def point(self, trial: StudyTrial) -> Point:
        return next(p for p in self.candidate(trial.candidate).points() if p.label == trial.point)

    def settings_of(self, trial: StudyTrial) -> dict:
        settings = self.candidate(trial.candidate).settings(self.point(trial)) | {
            "run.seed": trial.seed, "data.eval_part": trial.eval_part,
            "data.train_parts": trial.train_folds(self.folds),  # named: an inner trial must not see its outer fold
            "run.output_dir": str(trial_dir(self.out, trial))}
        if supports_resume():
            settings["train.resume"] = "auto"  # a retried trial continues from its last checkpoint
        return settings

    def config_of(self, trial: StudyTrial) -> Config:
        cfg = copy.deepcopy(self.base)
        for key, value in self.settings_of(trial).items():
            try:
                set_key(cfg, key, value)
            except ConfigError as e:
                raise ConfigError(f"candidate {trial.candidate}, point {trial.point}: {e}") from None
        return cfg

    @property
    def total_epochs(self) -> int:
        """The longest candidate's epoch plan (ASHA's max_t, the progress table's N)."""
        from ...methods import method_for

        return max(method_for(self.config_of(t)).epochs().total
                   for t in {t.candidate: t for t in self.trials}.values())

    def design(self) -> dict:
        """What --resume compares: a change here changes what the trials mean."""
        return {"folds": self.folds, "seeds": list(self.seeds), "candidates": [c.to_dict() for c in self.candidates]}

    def manifest(self) -> dict:
        return {"format": SEARCH_FORMAT, "mode": STUDY_MODE, "dataset": self.spec.dataset,
                "config": str(Path(self.spec.config).resolve()), "overrides": list(self.spec.overrides),
                "shards": str(self.shards), "folds": self.folds, "seeds": list(self.seeds),
                "base_config": to_dict(self.base), "parts": shard_parts(self.shards), "protocol": self.protocol,
                "candidates": [c.to_dict() for c in self.candidates], "reference": self.reference,
                "trials": [t.to_dict() for t in self.trials], "skipped": self.skipped, "budget": self.budget,
                "written": time.strftime("%Y-%m-%d %H:%M:%S")}


def build_trials(candidates: list[Candidate], folds: int, seeds: list[int], nested: bool) -> list[StudyTrial]:
    """CV trials first (every candidate's estimate), then the inner trials nested CV needs."""
    trials = [StudyTrial(c.name, p.label, s, k) for c in candidates for p in c.points() for s in seeds
              for k in range(folds)]
    if nested:
        trials += [StudyTrial(c.name, p.label, s, j, outer=k) for k in range(folds) for c in candidates
                   if len(c.points()) > 1 for p in c.points() for s in seeds for j in range(folds) if j != k]
    return trials


def check_study_overrides(overrides: list[str]) -> None:
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in STUDY_RESERVED:
            raise ConfigError(f"{key} is set by the study for every trial ({STUDY_RESERVED[key]})")


def plan_study(spec: SearchSpec, candidates: list[Candidate], shards, folds: int, seeds: list[int], resume: bool,
               max_trials: int | None = None, budget_hours: float | None = None) -> Study:
    """Resolve every trial's config (bad keys fail here, before a cluster starts) and decide what to run."""
    check_study_overrides(spec.overrides)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: expected distinct integers, got {seeds}")
    base = base_config(spec, shards)
    protocol = protocol_for(shards, folds, "study")
    names = [c.name for c in candidates]
    study = Study(spec, shards, folds, list(seeds), base, candidates, protocol,
                  reference=next((n for n in names if n == "ce"), names[0]),
                  budget={"max_trials": max_trials, "budget_hours": budget_hours})
    study.trials = build_trials(candidates, folds, study.seeds, nested=protocol == NESTED)
    configs = {t: study.config_of(t) for t in study.trials}  # every point's keys checked now
    check_stored(study.out, base, resume, mode=STUDY_MODE)
    if resume:
        check_design(study)
    study.todo = still_to_run(study.out, study.trials, configs.__getitem__, resume)
    if max_trials is not None:
        if max_trials < 1:
            raise ValueError(f"--max-trials must be >= 1, got {max_trials}")
        study.skipped = [t.id for t in study.todo[max_trials:]]
        study.todo = study.todo[:max_trials]
    return study


def check_design(study: Study) -> None:
    """--resume with other candidates, spaces, folds or seeds would mix two studies: name what changed."""
    import json

    stored = json.loads((study.out / SEARCH_FILE).read_text())
    old = {"folds": stored.get("folds"), "seeds": stored.get("seeds"), "candidates": stored.get("candidates")}
    new = study.design()
    changed = [k for k in ("folds", "seeds") if old[k] != new[k]]
    old_c = {c["name"]: c for c in old["candidates"] or []}
    for c in new["candidates"]:
        before = old_c.pop(c["name"], None)
        if before is None:
            changed.append(f"candidate {c['name']} added")
        else:
            changed += [f"candidate {c['name']}: {k} {before.get(k)!r} -> {c[k]!r}" for k in ("method", "fixed", "space")
                        if before.get(k) != c[k]]
    changed += [f"candidate {n} removed" for n in old_c]
    if changed:
        raise ValueError(f"--resume: the study in {study.out} was planned differently ({'; '.join(changed)}); "
                         "use the same --methods/--space/--folds/--seeds or another --output")
