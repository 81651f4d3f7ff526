"""The one planner of cross-validated trials: candidates x points x seeds x folds, then nested CV's inner trials.

Every CV kind of study expands through `expand`: a study of candidates (plan.py, trials `StudyTrial`) and
the noise grid, the `adpm` preset whose space is {noise.alpha, noise.beta} (../grid.py, trials named as the
paper's grid: `alpha1-6_beta5_fold0`). A candidate's points come from `Candidate.points()`, so the rules
of its keys (spec.no_effect: beta has no effect at alpha = 0) hold the same for both. `make` names the
trial; the expansion order and the folds each trial trains on are the planner's.

Pure data: no Ray, no torch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..contract import TrialRecord, train_parts
from .spec import Candidate, Point


@dataclass(frozen=True)
class StudyTrial:
    candidate: str
    point: str          # Point.label
    seed: int
    fold: int
    outer: int | None = None
    derived_from: str | None = None  # shared.py: the trial whose validated weights this one is read out over
    prefix_from: str | None = None   # shared.py: the trial whose kept prefix (stage 1, warm-up) this one starts from

    @classmethod
    def at(cls, candidate: Candidate, point: Point, seed: int, fold: int, outer: int | None) -> StudyTrial:
        return cls(candidate.name, point.label, seed, fold, outer)

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


def expand(candidates: list[Candidate], folds: int, seeds: list, nested: bool, make=StudyTrial.at,
           inner_for_one_point: bool = False) -> list:
    """CV trials first (every candidate's estimate: candidate, point, seed, fold order), then the inner trials
    nested CV needs (outer fold k: every point's CV over the other folds). A candidate with one point has
    nothing to choose and costs no inner trial, unless `inner_for_one_point` (the noise grid's evaluator
    chooses its one point on the inner CV all the same). `make(candidate, point, seed, fold, outer)` -> trial;
    a seed of None leaves run.seed to the config (the noise grid)."""
    if folds < 2:
        raise ValueError(f"--folds must be >= 2 (each trial trains on the other folds), got {folds}")
    if nested and folds < 3:
        raise ValueError(f"nested CV needs >= 3 folds (an outer test fold and >= 2 inner folds), got {folds}")
    points = {c.name: c.points() for c in candidates}
    trials = [make(c, p, s, k, None) for c in candidates for p in points[c.name] for s in seeds for k in range(folds)]
    if nested:
        trials += [make(c, p, s, j, k) for k in range(folds) for c in candidates
                   if inner_for_one_point or len(points[c.name]) > 1
                   for p in points[c.name] for s in seeds for j in range(folds) if j != k]
    return trials


def point_settings(candidate: Candidate, point: Point, seed: int | None) -> dict:
    """What a candidate's point sets in its trials (method, fixed keys, the point's keys), and the seed if
    the design has one (None: the config's own run.seed)."""
    return candidate.settings(point) | ({} if seed is None else {"run.seed": seed})
