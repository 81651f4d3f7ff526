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

from dataclasses import dataclass, field
from pathlib import Path

from ...config import Config, ConfigError
from ..contract import CV_RESERVED, apply_settings, check_reserved, cv_settings
from ..experiment import (SEARCH_FILE, SearchSpec, base_config, check_stored, manifest_of, protocol_for,
                          still_to_run)
from ..protocol import NESTED
from .shared import prefix_settings, share_prefixes, share_training
from .spec import Candidate, Point
from .trials import StudyTrial, expand, point_settings

STUDY_MODE = "study"
# The study's own keys; a candidate's searched keys (noise.alpha, loss.tau, ...) are free to override
# for every trial: a candidate's point sets its own keys after them.
STUDY_RESERVED = CV_RESERVED | {
    "method": "use --methods",
    "run.seed": "use --seeds",
}


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
        tracked = {"train.track_eval": True}  # the held-out fold at every validation: the recipe's epoch (recipe.py)
        return (point_settings(self.candidate(trial.candidate), self.point(trial), trial.seed)
                | cv_settings(trial, self.folds, self.out) | kept | tracked | prefix_settings(self, trial))

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
        return manifest_of(self.spec, self.shards, self.folds, self.base, self.protocol, STUDY_MODE,
                           seeds=list(self.seeds), candidates=[c.to_dict() for c in self.candidates],
                           reference=self.reference, trials=[t.to_dict() for t in self.trials],
                           skipped=self.skipped, budget=self.budget)


def check_study_overrides(overrides: list[str]) -> None:
    check_reserved(overrides, STUDY_RESERVED, "study")


def plan_study(spec: SearchSpec, candidates: list[Candidate], shards, folds: int, seeds: list[int], resume: bool,
               max_trials: int | None = None, budget_hours: float | None = None, share: bool = True) -> Study:
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
    trials = expand(candidates, folds, study.seeds, nested=protocol == NESTED)
    study.trials = share_training(study, trials) if share else trials
    study.sources = {t.derived_from for t in study.trials if t.derived_from}
    if share:
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
