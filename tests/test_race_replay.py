"""benchmarks/race_replay.py: the real race replayed on a finished study reads what a live race would have read,
runs only what it would have run, costs those trials' CPU time, and leaves the finished study untouched."""
from __future__ import annotations

import hashlib

from test_study_race import write_trial
from test_study import plan

from adpm_dist.tune.experiment import write_search


def finished_study(tmp_path):
    """ce misses every tail image and half the mid ones on each of 3 folds (clearly worse); logit_adjusted is
    right everywhere; every trial costs 50 CPU-seconds."""
    study = plan(tmp_path, {"logit_adjusted": {"baseline.la_tau": [1.0]}}, parts=("fold0", "fold1", "fold2", "test"))
    write_search(study)
    for t in study.trials:
        write_trial(study, t)
    return study


def digest(where) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(where.rglob("*")) if p.is_file())).hexdigest()


def test_a_replay_races_the_finished_trials_as_a_live_race_would(tmp_path):
    from benchmarks.race_replay import finished, replay

    study = finished_study(tmp_path)
    before = digest(study.out)
    r = replay(study.out, first_look=2)
    assert list(r["raced"]) == ["ce"] and r["raced"]["ce"]["wave"] == 2
    assert r["trials"] == len(study.trials) - 1                       # ce's third fold never ran
    assert abs(r["cpu_hours"] - r["trials"] * 50 / 3600) < 1e-12       # the ran trials' cost.json only
    assert r["recommendation"] == "logit_adjusted" == finished(study.out)["recommendation"]
    assert abs(finished(study.out)["cpu_hours"] - len(study.trials) * 50 / 3600) < 1e-12
    assert digest(study.out) == before                                  # nothing written into the study


def test_an_earlier_first_look_runs_no_more_trials(tmp_path):
    from benchmarks.race_replay import replay

    study = finished_study(tmp_path)
    early, rule = replay(study.out, first_look=1), replay(study.out, first_look=2)
    assert early["trials"] <= rule["trials"] and all(x["wave"] >= 1 for x in early["raced"].values())
