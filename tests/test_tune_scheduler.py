"""Per-fold ASHA: a trial is only compared with trials of its own fold (no cluster needed)."""
from __future__ import annotations

from types import SimpleNamespace

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from adpm_dist.tune.scheduler import PerFoldASHA


def trial(name: str, fold: int):
    return SimpleNamespace(trial_id=name, config={"trial": {"fold": fold}})


def decisions(scheduler, results):
    trials = {name: trial(name, fold) for name, fold, _ in results}
    for t in trials.values():
        scheduler.on_trial_add(None, t)
    return {name: scheduler.on_trial_result(None, trials[name], {"epoch": 1, "val_macro_f1": f1})
            for name, _, f1 in results}


# fold 1 is much harder than fold 0: equal configs score far lower there.
RESULTS = [("a_fold0", 0, 0.9), ("b_fold0", 0, 0.8), ("a_fold1", 1, 0.2), ("b_fold1", 1, 0.1)]


def test_trials_are_compared_within_their_fold():
    got = decisions(PerFoldASHA(max_t=4, grace_period=1, reduction_factor=2), RESULTS)
    assert got == {"a_fold0": TrialScheduler.CONTINUE, "b_fold0": TrialScheduler.STOP,
                   "a_fold1": TrialScheduler.CONTINUE, "b_fold1": TrialScheduler.STOP}


def test_one_global_asha_would_stop_the_best_trial_of_the_hard_fold():
    plain = ASHAScheduler(time_attr="epoch", metric="val_macro_f1", mode="max", max_t=4, grace_period=1,
                          reduction_factor=2)
    assert decisions(plain, RESULTS)["a_fold1"] == TrialScheduler.STOP  # why PerFoldASHA exists


def test_epochs_without_validation_and_the_last_epoch_never_stop():
    s = PerFoldASHA(max_t=2, grace_period=1, reduction_factor=2)
    t = trial("x", 0)
    s.on_trial_add(None, t)
    assert s.on_trial_result(None, t, {"epoch": 1, "loss": 3.0}) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, t, {"epoch": 2, "val_macro_f1": 0.5}) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, t, {"evaluated": 1, "eval_macro_f1": 0.5}) == TrialScheduler.CONTINUE


def test_tune_does_not_demand_the_metric_in_every_result():
    # Tune's strict metric checking uses `scheduler.metric`; epochs without validation lack val_macro_f1.
    assert PerFoldASHA(max_t=4, grace_period=1).metric is None
