"""The live trial table, driven by fake Tune callback events (no cluster)."""
from __future__ import annotations

import io
from types import SimpleNamespace

from adpm_dist.tune.grid import Trial
from adpm_dist.tune.progress import ProgressTable


def fake_trials(tmp_path):
    infos = []
    for alpha, fold in ((0.0, 0), (0.0, 1), (0.5, 0), (0.5, 1)):
        info = Trial(alpha, 5, fold).to_dict()
        info["config"] = {"run": {"output_dir": str(tmp_path / info["id"])}}
        infos.append(info)
    return infos, [SimpleNamespace(config={"trial": i}, last_result={}, error_file=None) for i in infos]


def test_events_counts_and_best_so_far(tmp_path):
    infos, trials = fake_trials(tmp_path)
    out = io.StringIO()
    table = ProgressTable(infos, total_epochs=3, interval=0, stream=out)
    for t in trials:
        table.on_trial_start(0, trials, t)
    table.on_trial_result(0, trials, trials[0], {"epoch": 2, "loss": 1.5, "val_macro_f1": 0.4})
    for t, f1 in ((trials[0], 0.5), (trials[1], 0.7), (trials[2], 0.9)):
        t.last_result = {"evaluated": 1, "eval_macro_f1": f1}
        table.on_trial_complete(0, trials, t)
    table.on_trial_recover(0, trials, trials[3])  # failed once, retried
    table.print_table()
    text = out.getvalue()
    assert "finished alpha0_beta5_fold0: eval macro-F1 0.5000 on fold0" in text
    assert "FAILED   alpha1-2_beta5_fold1 (attempt 1); retrying" in text
    assert "4 trials: 1 retrying, 3 finished" in text
    # alpha=1/2 has one fold at 0.9; alpha=0 has both folds at mean 0.6: the best so far is by mean over folds done.
    assert "best so far: alpha=1/2 beta=5 mean eval macro-F1 0.9000 (1/2 trials)" in text
    assert f"{'alpha0_beta5_fold0':<22}finished       2/3" in text  # the id column is the longest id + 2


def test_a_trial_ended_without_evaluation_is_not_finished(tmp_path):
    infos, trials = fake_trials(tmp_path)
    out = io.StringIO()
    table = ProgressTable(infos, total_epochs=3, interval=0, stream=out)
    table.on_trial_start(0, trials, trials[0])
    table.on_trial_complete(0, trials, trials[0])  # no final report, no metrics.json, no early-stop mark
    assert table.states["alpha0_beta5_fold0"].status == "ended"
    (tmp_path / "alpha1-2_beta5_fold0").mkdir()
    (tmp_path / "alpha1-2_beta5_fold0" / "early_stopped.json").write_text("{}")
    table.on_trial_complete(0, trials, trials[2])
    assert table.states["alpha1-2_beta5_fold0"].status == "stopped"


def test_eta_from_the_time_per_ended_trial(tmp_path):
    infos, trials = fake_trials(tmp_path)
    table = ProgressTable(infos, total_epochs=3, interval=0, stream=io.StringIO())
    assert table.eta() == ""  # nothing ended yet: no estimate
    table.start -= 600  # 10 minutes in
    trials[0].last_result = {"evaluated": 1, "eval_macro_f1": 0.5}
    table.on_trial_complete(0, trials, trials[0])
    assert table.eta() == " | ETA ~30 min"  # 10 min per ended trial x 3 left


def test_long_ids_keep_their_columns_and_each_trial_its_own_epoch_count():
    import io

    from adpm_dist.tune.progress import ProgressTable

    long_id = "logit_adjusted_la_tau1.5_seed0_fold0"  # 36 characters: wider than the old 34-character column
    out = io.StringIO()
    table = ProgressTable([{"id": long_id, "group": "la", "fold": 0, "outer": None, "seed": 0, "eval_part": "fold0"},
                           {"id": "adpm_default_seed0_fold0", "group": "adpm", "fold": 0, "outer": None, "seed": 0,
                            "eval_part": "fold0"}],
                          40, stream=out, epochs={long_id: 30})
    for s in table.states.values():
        s.status, s.epoch = "running", 3
    table.print_table()
    text = out.getvalue()
    assert f"{long_id}  running" in text and "3/30" in text and "3/40" in text
