"""Per-fold ASHA: a trial is only compared with trials of its own fold (no cluster needed)."""
from __future__ import annotations

from types import SimpleNamespace

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from adpm_dist.tune.scheduler import PerFoldASHA
from adpm_dist.tune.trainable import numeric


def trial(name: str, fold: int):
    return SimpleNamespace(trial_id=name, config={"trial": {"fold": fold}})


def decisions(scheduler, results):
    trials = {name: trial(name, fold) for name, fold, _ in results}
    for t in trials.values():
        scheduler.on_trial_add(None, t)
    return {name: scheduler.on_trial_result(None, trials[name], {"joint_epoch": 1, "val_macro_f1": f1})
            for name, _, f1 in results}


# fold 1 is much harder than fold 0: equal configs score far lower there.
RESULTS = [("a_fold0", 0, 0.9), ("b_fold0", 0, 0.8), ("a_fold1", 1, 0.2), ("b_fold1", 1, 0.1)]


def test_trials_are_compared_within_their_fold():
    got = decisions(PerFoldASHA(max_t=4, grace_period=1, reduction_factor=2), RESULTS)
    assert got == {"a_fold0": TrialScheduler.CONTINUE, "b_fold0": TrialScheduler.STOP,
                   "a_fold1": TrialScheduler.CONTINUE, "b_fold1": TrialScheduler.STOP}


def test_one_global_asha_would_stop_the_best_trial_of_the_hard_fold():
    plain = ASHAScheduler(time_attr="joint_epoch", metric="val_macro_f1", mode="max", max_t=4, grace_period=1,
                          reduction_factor=2)
    assert decisions(plain, RESULTS)["a_fold1"] == TrialScheduler.STOP  # why PerFoldASHA exists


def test_epochs_without_validation_and_the_last_epoch_never_stop():
    s = PerFoldASHA(max_t=2, grace_period=1, reduction_factor=2)
    t = trial("x", 0)
    s.on_trial_add(None, t)
    assert s.on_trial_result(None, t, {"joint_epoch": 1, "loss": 3.0}) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, t, {"joint_epoch": 2, "val_macro_f1": 0.5}) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, t, {"evaluated": 1, "eval_macro_f1": 0.5}) == TrialScheduler.CONTINUE


def test_tune_does_not_demand_the_metric_in_every_result():
    # Tune's strict metric checking uses `scheduler.metric`; epochs without validation lack val_macro_f1.
    assert PerFoldASHA(max_t=4, grace_period=1).metric is None


def test_the_time_axis_is_joint_epochs_so_a_prior_warm_up_is_not_held_against_a_method():
    # A classifier validates at epochs 5 and 15; ADPM, after a 10-epoch prior warm-up, first at epoch 15
    # (5 joint epochs). On the epoch axis ADPM's 5-joint-epoch score met the classifier's 15-epoch one
    # and was stopped (measured on digits-LT IR 50: every ADPM trial); on joint epochs it meets its peer.
    clf = [numeric({"epoch": e, "phase": "joint", "val_macro_f1": f1}) for e, f1 in ((5, 0.40), (15, 0.80))]
    adpm = numeric({"epoch": 15, "phase": "joint", "val_macro_f1": 0.55}, warmup=10)
    assert [r["joint_epoch"] for r in clf] == [5, 15] and adpm["joint_epoch"] == 5
    s = PerFoldASHA(max_t=30, grace_period=5, reduction_factor=3)
    a, b = trial("clf", 0), trial("adpm", 0)
    for t in (a, b):
        s.on_trial_add(None, t)
    for r in clf:
        assert s.on_trial_result(None, a, r) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, b, adpm) == TrialScheduler.CONTINUE  # 0.55 > the classifier's 0.40 at 5
    on_epochs = PerFoldASHA(max_t=30, grace_period=5, reduction_factor=3)
    for t in (a, b):
        on_epochs.on_trial_add(None, t)
    for r in clf:
        on_epochs.on_trial_result(None, a, r | {"joint_epoch": r["epoch"]})
    assert on_epochs.on_trial_result(None, b, adpm | {"joint_epoch": adpm["epoch"]}) == TrialScheduler.STOP  # the old axis


def test_candidate_scope_picks_a_methods_points_and_never_removes_a_method():
    # A post-hoc method scores low mid-training (its adjustment comes after): compared across candidates
    # it is stopped, which leaves it without an estimate (digits-LT IR 50, issue 28); within its own
    # candidate it is alone and goes on, while logit adjustment's worse tau is still stopped.
    def study_trial(name, candidate):
        return SimpleNamespace(trial_id=name, config={"trial": {"fold": 0, "seed": 0, "candidate": candidate}})

    runs = [("la_tau1", "la", 0.80), ("la_tau2", "la", 0.60), ("posthoc", "posthoc", 0.50)]
    got = {}
    for scope in ("fold", "candidate"):
        s = PerFoldASHA(max_t=4, grace_period=1, reduction_factor=2, scope=scope)
        trials = {name: study_trial(name, c) for name, c, _ in runs}
        for t in trials.values():
            s.on_trial_add(None, t)
        got[scope] = {name: s.on_trial_result(None, trials[name], {"joint_epoch": 1, "val_macro_f1": f1})
                      for name, _, f1 in runs}
    assert got["fold"]["posthoc"] == TrialScheduler.STOP
    assert got["candidate"] == {"la_tau1": TrialScheduler.CONTINUE, "la_tau2": TrialScheduler.STOP,
                                "posthoc": TrialScheduler.CONTINUE}


def test_an_unknown_scope_is_refused():
    import pytest

    with pytest.raises(ValueError, match="'method'"):
        PerFoldASHA(max_t=4, grace_period=1, scope="method")
