"""A study planned: candidates x points x seeds x folds as trials, and what is left to run.

A Study is a contract.Experiment and each trial gives a contract.TrialRecord, so the same Ray runner
(search.py), trainable, per-fold early stopping and progress table run it as any other kind. With a `test`
part every trial is a CV trial (train on the other folds, score fold k); on fold-only shards a
candidate with more than one point also gets the inner trials of nested CV (outer fold k left out as
well), so that each outer fold's point is chosen without fold k. A candidate with one point has
nothing to choose: its CV trials are its estimate, and it costs no inner trial.

No Ray imports here: everything is checked before a cluster starts.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...config import Config, ConfigError, to_dict
from ..contract import CV_RESERVED, TrialRecord, apply_settings, check_reserved, cv_settings, train_parts
from ..experiment import SEARCH_FILE, SEARCH_FORMAT, SearchSpec, base_config, check_stored, protocol_for, shard_parts, still_to_run
from ..protocol import NESTED
from .shared import prefix_settings, share_prefixes, share_training
from .spec import Candidate, Point

STUDY_MODE = "study"
# The study's own keys; a candidate's searched keys (noise.alpha, loss.tau, ...) are free to override
# for every trial: a candidate's point sets its own keys after them.
STUDY_RESERVED = CV_RESERVED | {
    "method": "use --methods",
    "run.seed": "use --seeds",
}


@dataclass(frozen=True)
class StudyTrial:
    candidate: str
    point: str          # Point.label
    seed: int
    fold: int
    outer: int | None = None
    derived_from: str | None = None  # shared.py: the trial whose validated weights this one is read out over
    prefix_from: str | None = None   # shared.py: the trial whose kept prefix (stage 1, warm-up) this one starts from

    @property
    def id(self) -> str:
        outer = "" if self.outer is None else f"outer{self.outer}_"
        return f"{outer}{self.candidate}_{self.point}_seed{self.seed}_fold{self.fold}"

    @property
    def eval_part(self) -> str:
        return f"fold{self.fold}"

    def train_folds(self, folds: int) -> list[str]:
        return train_parts(self.fold, self.outer, folds)

    def record(self) -> TrialRecord:
        return TrialRecord(self.id, f"{self.candidate} {self.point}", self.fold, self.outer, self.seed,
                           self.eval_part, candidate=self.candidate, derived_from=self.derived_from)

    def to_dict(self) -> dict:
        return self.record().to_dict() | asdict(self)


@dataclass
class Study:
    """A planned study, a contract.Experiment: candidates x points x seeds x folds."""
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
    sources: set[str] = field(default_factory=set)        # trial ids whose training others replay (shared.py)
    prefix_sources: set[str] = field(default_factory=set)  # trial ids whose kept prefix others start from

    @property
    def out(self) -> Path:
        return self.spec.out

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)

    def point(self, trial: StudyTrial) -> Point:
        return next(p for p in self.candidate(trial.candidate).points() if p.label == trial.point)

    def settings_of(self, trial: StudyTrial) -> dict:
        kept = {"train.keep_validated": True} if trial.id in self.sources else {}  # for the trials replaying it
        return (self.candidate(trial.candidate).settings(self.point(trial)) | {"run.seed": trial.seed}
                | cv_settings(trial, self.folds, self.out) | kept | prefix_settings(self, trial))

    def config_of(self, trial: StudyTrial) -> Config:
        return apply_settings(self.base, self.settings_of(trial), f"candidate {trial.candidate}, point {trial.point}")

    show_eval = True

    @property
    def logs(self) -> str:
        return str(self.out / "trials" / "<trial>" / "train.log")

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
    check_reserved(overrides, STUDY_RESERVED, "study")


def plan_study(spec: SearchSpec, candidates: list[Candidate], shards, folds: int, seeds: list[int], resume: bool,
               max_trials: int | None = None, budget_hours: float | None = None) -> Study:
    """Resolve every trial's config (bad keys fail here, before a cluster starts) and decide what to run."""
    check_study_overrides(spec.overrides)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: expected distinct integers, got {seeds}")
    base = base_config(spec, shards, STUDY_RESERVED, "study")
    protocol = protocol_for(shards, folds, "study")
    names = [c.name for c in candidates]
    study = Study(spec, shards, folds, list(seeds), base, candidates, protocol,
                  reference=next((n for n in names if n == "ce"), names[0]),
                  budget={"max_trials": max_trials, "budget_hours": budget_hours})
    study.trials = share_training(study, build_trials(candidates, folds, study.seeds, nested=protocol == NESTED))
    study.sources = {t.derived_from for t in study.trials if t.derived_from}
    study.trials = share_prefixes(study, study.trials)
    study.prefix_sources = {t.prefix_from for t in study.trials if t.prefix_from}
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
