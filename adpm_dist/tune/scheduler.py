"""Early stopping that compares trials of the same fold only: one ASHA per fold.

Studies: trials of the same fold with different seeds start from different initialisations, so each
(outer fold, fold, seed) gets its own ASHA; candidates of one study on that group are compared.

Nested CV: the inner trials of outer fold k train on other data than the CV trials of the same
evaluation fold, so each (outer fold, fold) gets its own ASHA.

Folds differ in difficulty (digits-LT fold0 may simply be easier than fold1), so a trial must only
be stopped for doing worse than other (alpha, beta) on the *same* evaluation fold. Tune has one
scheduler per experiment; this wrapper keeps an ``ASHAScheduler`` per fold and routes each trial's
events to its fold's instance. Trials run in submission order (FIFO), as with plain ASHA.

ASHA looks at ``val_macro_f1`` (validation data, reported on validation epochs only) against
``joint_epoch``, the epochs that trained the whole model (trainable.numeric): a diffusion method's
prior-only warm-up does not count, so its first validation (5 joint epochs after a 10-epoch warm-up)
meets a classifier's 5th epoch, not its 15th. On the epoch axis, a digits-LT study's ASHA stopped
every ADPM trial at its first validation (benchmarks/RESULTS.md, issue 28). Epochs without validation
carry no metric and are skipped by ASHA. A stopped trial has no
evaluation (no metrics.json): its (alpha, beta) lacks that fold in the summary and cannot be "best".

Scope (studies): `fold` compares every candidate of a (fold, seed) with the others, the cheapest, but a
method judged by its mid-training score can lose its whole estimate (a post-hoc method at 5 epochs,
measured on digits-LT IR 50); `candidate` compares only the points of one candidate, so ASHA picks a
method's hyper-parameters and never removes a method: the first trial to reach a rung always goes on,
so each candidate keeps a finished trial per (fold, seed), and a one-point candidate is never stopped.
"""
from __future__ import annotations

from pathlib import Path

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from ..files import atomic_write_json

METRIC, TIME_ATTR = "val_macro_f1", "joint_epoch"
SCOPES = ("fold", "candidate")


class PerFoldASHA(FIFOScheduler):
    def __init__(self, max_t: int, grace_period: int, reduction_factor: float = 3, on_stop=None, *,
                 scope: str = "fold"):
        """`on_stop(trial, result)` is called when ASHA stops a trial (the search marks it for --resume);
        `scope`: one of SCOPES (module docstring)."""
        super().__init__()
        if scope not in SCOPES:
            raise ValueError(f"early-stopping scope {scope!r}: expected one of {', '.join(SCOPES)}")
        self._on_stop, self._scope = on_stop, scope
        self._options = dict(time_attr=TIME_ATTR, metric=METRIC, mode="max", max_t=max_t,
                             grace_period=min(grace_period, max_t), reduction_factor=reduction_factor,
                             stop_last_trials=False)  # never stop at the last epoch: the evaluation follows it
        self._by_fold: dict[tuple, ASHAScheduler] = {}
        # self._metric stays None: Tune would otherwise reject every result without val_macro_f1 (strict
        # metric checking), and only validation epochs carry it. The per-fold ASHAs know the metric.

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return metric in (None, METRIC) and mode in (None, "max")

    def _fold(self, trial) -> ASHAScheduler:
        info = trial.config["trial"]
        group = (info.get("outer"), info["fold"], info.get("seed"))  # outer None: a CV trial; seed: studies
        if self._scope == "candidate":
            group += (info.get("candidate"),)
        if group not in self._by_fold:
            self._by_fold[group] = ASHAScheduler(**self._options)
        return self._by_fold[group]

    def on_trial_add(self, tune_controller, trial):
        self._fold(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial):
        self._fold(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        action = self._fold(trial).on_trial_result(tune_controller, trial, result)
        if action == self.STOP and self._on_stop is not None:
            self._on_stop(trial, result)
        return action

    def on_trial_complete(self, tune_controller, trial, result):
        self._fold(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        self._fold(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "\n".join(f"{'' if key[0] is None else f'outer {key[0]} '}fold {key[1]}"
                         f"{'' if key[2] is None else f' seed {key[2]}'}{''.join(f' {c}' for c in key[3:])}: "
                         f"{s.debug_string()}" for key, s in
                         sorted(self._by_fold.items(), key=lambda kv: (kv[0][0] is not None, str(kv[0]))))


def mark_early_stop(trial, result) -> None:
    """Write `early_stopped.json` into the trial's run directory: --resume does not run it again."""
    run_dir = Path(trial.config["trial"]["config"]["run"]["output_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "early_stopped.json", {"epoch": result.get("epoch"), TIME_ATTR: result.get(TIME_ATTR),
                                                        METRIC: result.get(METRIC)})
