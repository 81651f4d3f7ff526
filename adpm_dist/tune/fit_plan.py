"""`search_noise.py --fit`: the noise law fitted per fold instead of grid-searched (docs/tune.md,
"Fitting the noise law instead of searching it").

Two phases of K trials each, in the grid's directory layout (experiment.py) and run by the same
`search.run_search`:

- phase 1, ``prior_fold{k}``: the prior network alone (``method=prior``) trained on every fold but k,
  like a grid trial. Its metrics.json holds, for the kept validation epoch, the per-sample validation
  losses per class (``selection.val_class_losses``) and its training counts (``train_counts``); eq. 7
  is fitted to those (fit_report.py). Validation data is the shards' `val` part or a carve-out of the
  training folds, never fold k, so fold k's fit never sees fold k: no nested CV is needed.
- phase 2, ``fitted_fold{k}``: ADPM at fold k's fitted eq. 14 settings (base config + the user's
  overrides + `noise_fit.eq14_settings`), trained on the same folds and evaluated on fold k.

No Ray imports here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config
from .contract import CV_RESERVED, OneEpochPlan, TrialRecord, apply_settings, check_reserved, cv_settings, train_parts
from .experiment import SearchSpec, base_config, check_stored, manifest_of, shard_parts, still_to_run
from .protocol import choose_protocol

FIT_MODE = "fit"
PRIOR, FITTED = "prior", "fitted"
PHASE_METHOD = {PRIOR: "prior", FITTED: "adpm"}
FIT_RESERVED = CV_RESERVED | {
    "noise.alpha": "--fit fits it per fold (eq. 7)",
    "noise.beta": "--fit fits it per fold (eq. 7)",
    "noise.formula": "--fit sets it per fold from the fitted law (eq. 14)",
    "method": "--fit trains method=prior in phase 1 and ADPM in phase 2",
}
FIT_SELECTION = ("per fold k: eq. 7 fitted to the validation losses of the prior network trained without fold k; "
                 "no choice is made on any fold's evaluation part")


def check_fit_overrides(overrides: list[str]) -> None:
    check_reserved(overrides, FIT_RESERVED, "search")


@dataclass(frozen=True)
class FitTrial:
    """One run of --fit: phase `prior` (fit data) or `fitted` (ADPM at the fitted law), evaluated on fold `fold`."""
    phase: str
    fold: int

    outer = None  # never an inner trial: consolidate's rows read it

    @property
    def id(self) -> str:
        return f"{self.phase}_fold{self.fold}"

    @property
    def eval_part(self) -> str:
        return f"fold{self.fold}"

    def train_folds(self, folds: int) -> list[str]:
        return train_parts(self.fold, None, folds)

    def record(self) -> TrialRecord:
        group = "prior network" if self.phase == PRIOR else "fitted law per fold"  # "best so far": the fold mean
        return TrialRecord(self.id, group, self.fold, None, None, self.eval_part)

    def to_dict(self) -> dict:
        return self.record().to_dict() | {"phase": self.phase}


@dataclass
class FitSearch(OneEpochPlan):
    """One phase of a --fit search, a contract.Experiment."""
    spec: SearchSpec
    shards: Path
    folds: int
    user_base: Config              # YAML + overrides + shards: what search.json stores and --resume compares
    phase: str
    trials: list[FitTrial]
    todo: list[FitTrial]
    protocol: str
    fold_settings: dict[int, dict] = field(default_factory=dict)  # phase 2: fold -> eq14 overrides
    n_boot: int = 200

    @property
    def out(self) -> Path:
        return self.spec.out

    @property
    def base(self) -> Config:
        """The phase's base config (its method), for the epoch count of the progress table and ASHA."""
        return apply_settings(self.user_base, {"method": PHASE_METHOD[self.phase]})

    def settings_of(self, trial: FitTrial) -> dict:
        # the same parts in both phases; phase 2 adds its fold's fitted law
        return ({"method": PHASE_METHOD[trial.phase]} | cv_settings(trial, self.folds, self.out)
                | self.fold_settings.get(trial.fold, {}))

    def config_of(self, trial: FitTrial) -> Config:
        return apply_settings(self.user_base, self.settings_of(trial), trial.id)

    def manifest(self) -> dict:
        every = [FitTrial(p, k) for p in (PRIOR, FITTED) for k in range(self.folds)]
        return manifest_of(self.spec, self.shards, self.folds, self.user_base, self.protocol, FIT_MODE,
                           n_boot=self.n_boot, trials=[t.to_dict() for t in every], selection=FIT_SELECTION)


def plan_fit(spec: SearchSpec, shards: Path, folds: int, resume: bool, phase: str = PRIOR,
             fold_settings: dict[int, dict] | None = None, n_boot: int = 200) -> FitSearch:
    """One phase: configs resolved (bad keys fail before any cluster starts) and the trials still to run.

    Phase 1 refuses an --output that holds another search (as plan_search does); phase 2 runs one
    trial per fold in `fold_settings` (a fold whose fit failed has none).
    """
    check_fit_overrides(spec.overrides)
    user_base = base_config(spec, shards, FIT_RESERVED)
    parts = shard_parts(shards)
    if not parts:
        raise FileNotFoundError(f"{shards}/manifest.json is missing or lists no parts: not a shard directory")
    if folds < 2:
        raise ValueError(f"--folds must be >= 2 (each trial trains on the other folds), got {folds}")
    if phase == PRIOR:
        check_stored(spec.out, user_base, resume, mode=FIT_MODE)
    ks = range(folds) if phase == PRIOR else sorted(fold_settings or {})
    search = FitSearch(spec, shards, folds, user_base, phase, [FitTrial(phase, k) for k in ks], [],
                       choose_protocol(parts), dict(fold_settings or {}), n_boot)
    for t in search.trials[:1]:
        search.config_of(t)  # exercises every per-trial key once
    # resume: finished() refuses a trial trained with another config (in phase 2: at another fit)
    search.todo = still_to_run(search.out, search.trials, search.config_of, resume)
    return search


__all__ = ["FIT_MODE", "PRIOR", "FITTED", "FitTrial", "FitSearch", "plan_fit", "check_fit_overrides"]
