"""The noise grid, the `adpm` preset of a study: one candidate whose space is {noise.alpha, noise.beta}.

Its trials are planned by the study planner (study/trials.py `expand`) and named as the paper's grid
(`alpha1-6_beta5_fold0`); alpha = 0 is trained once for every beta by the candidate's own rule of its
keys (study/spec.py `no_effect`), and `shared_source` reads that rule back for the evaluator.
`plan_search` plans it as a contract.Experiment (`Search`, mode `grid` in search.json, evaluated by
consolidate.py). No Ray: the CLI, the Tune trainable and the consolidating evaluator all agree on trial
ids, output directories and the parts each trial trains and evaluates on through this module.

Two kinds of trial: a CV trial (`outer` None) trains on every fold but `fold` and is evaluated on
`fold`; an inner trial of nested CV (`outer` k) also leaves out fold k, which only the outer
evaluation may see (protocol.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from ..config import Config
from .contract import CV_RESERVED, OneEpochPlan, TrialRecord, apply_settings, check_reserved, cv_settings, train_parts
from .experiment import SearchSpec, base_config, check_stored, manifest_of, protocol_for, still_to_run
from .protocol import HELD_OUT, NESTED
from .study.spec import Candidate, Point, no_effect
from .study.trials import expand, point_settings

# The paper's grid (its Table 2; docs/algorithm.md, "Noise levels (eq. 14)"):
# alpha in {0, 1/6, 1/4, 1/2, 1}, beta in {1..10}, 5 folds.
PAPER_ALPHAS = ("0", "1/6", "1/4", "1/2", "1")
PAPER_BETAS = tuple(str(b) for b in range(1, 11))
PAPER_FOLDS = 5
NOISE_PRESET = "adpm"  # the grid's one candidate: its trials' `candidate`, what the price is reported under


def parse_number(text: str, what: str) -> float:
    """'0.5', '2', or a fraction '1/6' (as the paper writes alpha) -> float; ValueError names `what`."""
    text = str(text).strip()
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{what}: {text!r} is not a number or a fraction like 1/6") from None
    if value < 0:
        raise ValueError(f"{what}: {text!r} must be >= 0")
    return value


def parse_values(items: list[str] | tuple[str, ...], what: str) -> list[float]:
    """Accept `--alphas 0,1/6 1/4` (commas and/or separate arguments); keep order, drop duplicates."""
    values: list[float] = []
    for item in items:
        for text in str(item).split(","):
            if text.strip():
                v = parse_number(text, what)
                if not any(abs(v - u) < 1e-12 for u in values):
                    values.append(v)
    if not values:
        raise ValueError(f"{what}: no values given")
    return values


def label(value: float, fraction: bool = True) -> str:
    """A short label as the paper writes it: alpha 1/6 for 0.1666..., 1/4, 0.05; beta (fraction=False) 5, 2.5."""
    frac = Fraction(value).limit_denominator(12)
    if abs(float(frac) - value) < 1e-9 and (fraction or frac.denominator == 1):
        return str(frac.numerator) if frac.denominator == 1 else f"{frac.numerator}/{frac.denominator}"
    return f"{value:g}"


@dataclass(frozen=True)
class Trial:
    """One training run of the search: noise (alpha, beta) evaluated on fold `fold`.

    `outer` k: an inner trial of nested CV, trained without fold k (the outer test fold) as well.
    """
    alpha: float
    beta: float
    fold: int
    outer: int | None = None

    @classmethod
    def at(cls, candidate: Candidate, point: Point, seed: None, fold: int, outer: int | None) -> Trial:
        """The planner's `make` (study/trials.py): the grid has one seed, the config's own."""
        return cls(point.settings["noise.alpha"], point.settings["noise.beta"], fold, outer)

    @property
    def point(self) -> Point:
        return Point({"noise.alpha": self.alpha, "noise.beta": self.beta})

    @property
    def alpha_label(self) -> str:
        return label(self.alpha)

    @property
    def beta_label(self) -> str:
        return label(self.beta, fraction=False)

    @property
    def eval_part(self) -> str:
        return f"fold{self.fold}"

    def train_folds(self, folds: int) -> list[str]:
        """The folds this trial trains on: all but its evaluation fold (and its outer fold, if inner)."""
        return train_parts(self.fold, self.outer, folds)

    @property
    def id(self) -> str:
        """File-system safe and unique within a search: alpha1-6_beta5_fold0, outer2_alpha1-6_beta5_fold0."""
        outer = "" if self.outer is None else f"outer{self.outer}_"
        return (f"{outer}alpha{self.alpha_label.replace('/', '-')}_beta{self.beta_label.replace('/', '-')}"
                f"_fold{self.fold}")

    @property
    def title(self) -> str:
        outer = "" if self.outer is None else f" (inner CV of outer fold {self.outer})"
        return f"alpha={self.alpha_label} beta={self.beta_label} fold={self.fold}{outer}"

    @property
    def group(self) -> str:
        return f"alpha={self.alpha_label} beta={self.beta_label}"

    def record(self) -> TrialRecord:
        return TrialRecord(self.id, self.group, self.fold, self.outer, None, self.eval_part, candidate=NOISE_PRESET)

    def to_dict(self) -> dict:
        return self.record().to_dict() | asdict(self) | {"alpha_label": self.alpha_label,
                                                         "beta_label": self.beta_label}


def noise_candidate(alphas: list[float], betas: list[float], method: str = "adpm") -> Candidate:
    """The grid as a study's candidate: `method` (the config's, adpm unless overridden) with the space
    {noise.alpha: alphas, noise.beta: betas}, in that order (rows alpha, columns beta)."""
    return Candidate(NOISE_PRESET, method, {}, {"noise.alpha": list(alphas), "noise.beta": list(betas)})


def build_trials(alphas: list[float], betas: list[float], folds: int, nested: bool = False) -> list[Trial]:
    """Every trial to run, as the study planner expands the grid's candidate: the CV trials in (alpha, beta,
    fold) order, alpha = 0 with the first beta only (`no_effect`), then (nested) the inner trials.

    Nested: for each outer fold k, the CV of every grid point over the other folds (inner trials
    `outer=k`), even for a one-point grid (consolidate.py chooses on the inner CV). The CV trial (alpha,
    beta, fold k) is then exactly the selected point trained on the folds other than k and evaluated on k,
    so the outer evaluation needs no trial of its own.
    """
    return expand([noise_candidate(alphas, betas)], folds, [None], nested, make=Trial.at, inner_for_one_point=True)


def shared_source(trial: Trial, betas: list[float]) -> Trial:
    """The trial whose results stand for `trial`: itself, except where beta has no effect (alpha = 0,
    `no_effect`) and a later beta reads the first beta's trial (the paper's Table 2 row alpha = 0 is constant)."""
    if "noise.beta" in no_effect(trial.point.settings) and trial.beta != betas[0]:
        return Trial(trial.alpha, betas[0], trial.fold, trial.outer)
    return trial


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


def check_overrides(overrides: list[str]) -> None:
    check_reserved(overrides, RESERVED_KEYS, "search")


def trial_settings(candidate: Candidate, trial: Trial, folds: int, out: Path) -> dict:
    """Dotted key -> typed value for what a grid trial sets itself: its candidate's point (the method, the
    noise), then the CV settings; a study's trial sets the same (study/trials.py point_settings)."""
    return point_settings(candidate, trial.point, None) | cv_settings(trial, folds, out)


def trial_config(base: Config, trial: Trial, out: Path, folds: int) -> Config:
    """The base config with this trial's settings applied as values (set_key), never re-parsed from text."""
    candidate = noise_candidate([trial.alpha], [trial.beta], base.method)
    return apply_settings(base, trial_settings(candidate, trial, folds, out), trial.title)


@dataclass
class GridSpec(SearchSpec):
    """A noise grid's SearchSpec: its two axes, the `adpm` preset's space {noise.alpha, noise.beta}."""
    alphas: list[float] = field(default_factory=list)
    betas: list[float] = field(default_factory=list)


@dataclass
class Search(OneEpochPlan):
    """A planned noise grid (a contract.Experiment): the `adpm` preset's candidate (`noise_candidate`, with
    the config's method), the resolved base config and the trials still to run."""
    spec: GridSpec
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
        return manifest_of(self.spec, self.shards, self.folds, self.base, self.protocol, None,
                           alphas=[{"value": a, "label": label(a)} for a in self.spec.alphas],
                           betas=[{"value": b, "label": label(b, fraction=False)} for b in self.spec.betas],
                           candidates=[self.candidate.to_dict()],  # the study preset the grid is
                           trials=[t.to_dict() for t in self.trials], selection=SELECTION[self.protocol])


def plan_search(spec: GridSpec, shards: Path, folds: int, resume: bool) -> Search:
    """Resolve configs (failing on bad keys before any cluster starts) and decide what to run.

    Without `resume`, an experiment directory that already holds a search is refused (its trial
    directories would be mixed with the new ones). With `resume`, the stored base config must equal
    the new one, and trials with metrics.json (or stopped early by ASHA) are not run again.
    """
    out = spec.out
    base = base_config(spec, shards, RESERVED_KEYS)
    protocol = protocol_for(shards, folds, "search")
    search = Search(spec, shards, folds, base, build_trials(spec.alphas, spec.betas, folds, nested=protocol == NESTED),
                    [], protocol)
    for t in search.trials[:1]:
        search.config_of(t)  # exercises every per-trial key once
    check_stored(out, base, resume)
    search.todo = still_to_run(out, search.trials, search.config_of, resume)
    return search
