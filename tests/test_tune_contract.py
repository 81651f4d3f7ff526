"""The Experiment contract every kind of study keeps (tune/contract.py), the cost of a trial as the work
itself (cost.py), the price before a run (price.py, --dry-run), metrics checked on read, searched values
checked up front, and a driver stopped by Ctrl-C / SIGTERM (interrupt.py). No training, no Ray cluster."""
from __future__ import annotations

import io
import json
import signal
import time

import pytest
from test_study import cli as study_cli
from test_study import plan, study  # noqa: F401  (a fixture: a finished synthetic study)
from test_tune_consolidate import TINY, fake_metrics

from adpm_dist.config import ConfigError, load_config
from adpm_dist.tune import cost as cost_mod
from adpm_dist.tune.batch import RunBatch, batch_run
from adpm_dist.methods import EpochPlan
from adpm_dist.tune.contract import Experiment, TrialRecord
from adpm_dist.tune.experiment import SearchSpec, trial_dir
from adpm_dist.tune.grid import GridSpec, plan_search
from adpm_dist.tune.fit_plan import FitTrial
from adpm_dist.tune.grid import Trial
from adpm_dist.tune.interrupt import Interrupted, graceful_stop, report
from adpm_dist.tune.price import EpochCost, Row, estimate
from adpm_dist.tune.study.plan import StudyTrial
from adpm_dist.tune.study.report import consolidate_study
from adpm_dist.tune.trainable import add_cost

NOISE = {"alpha", "beta", "alpha_label", "beta_label"}


def test_every_kind_of_trial_gives_a_record_and_none_fakes_the_grids_noise(tmp_path):
    batch = batch_run("d/ce", "digits ce", load_config(TINY, [f"run.output_dir={tmp_path / 'ce'}"]))
    trials = [Trial(0.5, 5, 1, outer=2), StudyTrial("ce", "default", 3, 1, 2), FitTrial("prior", 1), batch]
    for t in trials:
        record = t.record()
        assert isinstance(record, TrialRecord) and record.id == t.id
        assert set(record.to_dict()) <= set(t.to_dict())  # search.json holds the record too
    assert [t.record().group for t in trials] == ["alpha=1/2 beta=5", "ce default", "prior network", "digits ce"]
    assert trials[1].record().seed == 3 and trials[1].record().candidate == "ce"
    for t in trials[1:]:
        assert not NOISE & set(t.to_dict()), t  # only the grid has an alpha and a beta
    assert isinstance(RunBatch(tmp_path, [batch]), Experiment)


def test_a_study_sets_noise_keys_a_grid_reserves(tmp_path):
    s = plan(tmp_path, {}, overrides=("train.epochs=1", "noise.alpha=0.5"))  # was refused: "use --alphas"
    assert isinstance(s, Experiment)
    cfg = {t.candidate: s.config_of(t) for t in s.trials}
    assert cfg["ce"].noise.alpha == 0.5 and cfg["adpm_isotropic"].noise.alpha == 0.0  # the preset's own value wins
    with pytest.raises(ConfigError, match="run.seed is set by the study for every trial"):
        plan(tmp_path, {}, overrides=("run.seed=3",))
    shards = tmp_path / "shards"
    spec = GridSpec(dataset="digits_lt", config=TINY, output=str(tmp_path / "g"), alphas=[0.5], betas=[5],
                      overrides=["noise.alpha=0.5"])
    with pytest.raises(ConfigError, match="use --alphas"):
        plan_search(spec, shards, 3, resume=False)


def test_a_searched_value_out_of_range_is_refused_before_any_trial(tmp_path):
    with pytest.raises(ConfigError, match=r"candidate logit_adjusted, point lr-1: train.lr: invalid value -1"):
        plan(tmp_path, {"logit_adjusted": {"train.lr": [-1]}})
    assert not (tmp_path / "study").exists()  # nothing written, no cluster


def test_trial_hours_count_cpu_time_and_fall_back_to_wall_x_cpus():
    new = cost_mod.trial_hours({"wall_s": 3600, "cpu_s": 1800, "cpus": 4, "gpus": 1, "gpu_s": 3600})
    assert new == {"cpu_hours": 0.5, "gpu_hours": 1.0, "wall_hours": 1.0, "cpu_source": "cpu_time"}
    old = cost_mod.trial_hours({"wall_s": 1800, "cpus": 2, "gpus": 0.5})  # written before cpu_s existed
    assert old == {"cpu_hours": 1.0, "gpu_hours": 0.25, "wall_hours": 0.5, "cpu_source": "wall_x_cpus"}
    assert cost_mod.trial_hours({})["cpu_hours"] == 0.0


def test_cost_json_adds_cpu_and_gpu_time_over_attempts(tmp_path):
    res = {"workers": 1, "cpus": 2.0, "gpus": 1.0}
    add_cost(tmp_path, 10.0, res, cpu_s=15.0)
    c = add_cost(tmp_path, 5.0, res, cpu_s=6.0)
    assert c["wall_s"] == 15.0 and c["cpu_s"] == 21.0 and c["gpu_s"] == 15.0 and c["attempts"] == 2
    c = add_cost(tmp_path, 1.0, res)  # an attempt whose CPU time is unknown (multi-worker): no partial sum
    assert "cpu_s" not in c and cost_mod.trial_hours(c)["cpu_source"] == "wall_x_cpus"


def test_the_cpu_clock_counts_this_processes_work():
    clock = cost_mod.CpuClock()
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    assert 0.15 <= clock.seconds() < 5


def test_a_descendant_that_ends_unwaited_does_not_take_its_history_out_of_the_clock(monkeypatch):
    """A Ray worker that burned 500 s and is reaped by the raylet (not by us) while the driver replays: the
    clock counts each live descendant's growth since start, so its exit subtracts nothing (before: -500,
    read as 0); and live_children=False counts this process alone."""
    own = iter([10.0, 12.5])
    live = iter([{1: 500.0, 2: 3.0}, {2: 4.0, 3: 0.5}])           # pid 1 ended; pid 3 started meanwhile
    monkeypatch.setattr(cost_mod, "own_seconds", lambda: next(own))
    monkeypatch.setattr(cost_mod, "live_children_seconds", lambda: next(live))
    assert cost_mod.CpuClock().seconds() == pytest.approx(2.5 + 1.0 + 0.5)
    own = iter([10.0, 12.5])
    monkeypatch.setattr(cost_mod, "live_children_seconds", lambda: pytest.fail("descendants are not read"))
    assert cost_mod.CpuClock(live_children=False).seconds() == pytest.approx(2.5)
    own, live = iter([10.0, 12.0, 15.0]), iter([{2: 3.0}, {2: 4.0}, {2: 4.5}])
    monkeypatch.setattr(cost_mod, "live_children_seconds", lambda: next(live))
    clock = cost_mod.CpuClock()                 # lap: each epoch's share once (AttemptCost.tick)
    assert clock.lap() == pytest.approx(3.0) and clock.lap() == pytest.approx(3.5)


def test_the_estimate_prices_recorded_candidates_and_names_the_rest():
    rows = [Row("ce", 6, 10, EpochCost(wall_s=3.0, cpu_s=1.5, runs=2)), Row("adpm", 3, 20, None)]
    total = estimate(rows, cpus_per_trial=2, gpus_per_trial=0, at_once=3)
    assert total["trials"] == 9 and total["epochs"] == 6 * 10 + 3 * 20
    assert total["cpu_hours"] == pytest.approx(6 * 10 * 1.5 / 3600)  # CPU time, not wall x CPUs
    assert total["wall_hours"] == pytest.approx(6 * 10 * 3.0 / 3 / 3600) and total["unpriced"] == ["adpm"]


def test_dry_run_prints_a_price_and_starts_no_trial(study, tmp_path, monkeypatch, capsys):  # noqa: F811
    import adpm_dist.tune.search as search
    from adpm_dist.tune.search import Resources

    shards = tmp_path / "shards"
    monkeypatch.setattr(search, "resources_and_shards", lambda args, output, base: (Resources(), shards, 3))
    monkeypatch.setattr(search, "run_search", lambda *a, **k: pytest.fail("--dry-run started trials"))
    ce = [t for t in study.trials if t.candidate == "ce"]
    for t in ce[1:]:  # finished, with the epochs they trained: ce's cost per epoch is recorded (50 s / 2 epochs)
        path = trial_dir(study.out, t) / "metrics.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | {"history": [{}, {}]}))
    (trial_dir(study.out, ce[0]) / "metrics.json").unlink()  # still to run
    (tmp_path / "space.yaml").write_text("logit_adjusted: {baseline.la_tau: [0.5, 1.0]}\n")
    before = (study.out / "search.json").read_text()
    code = study_cli().main(["--dataset", "imagefolder", "--config", TINY, "--output", str(study.out), "--resume",
                             "--methods", "ce,logit_adjusted,adpm_isotropic", "--space", str(tmp_path / "space.yaml"),
                             "--dry-run", "train.epochs=1"])
    out = capsys.readouterr().out
    assert code == 0 and "price before it runs" in out and "CPU-hours" in out
    row = next(line.split() for line in out.splitlines() if line.strip().startswith("ce "))
    assert row[1] == "1" and float(row[3]) == pytest.approx(25.0)  # 1 trial to run, at 25 s per epoch
    assert (study.out / "search.json").read_text() == before  # nothing written


def test_bad_metrics_are_failed_trials_that_name_the_file(study):  # noqa: F811
    ce = [t for t in study.trials if t.candidate == "ce"]
    bad = {ce[0]: json.dumps(fake_metrics(7.5, 0)), ce[1]: json.dumps(fake_metrics(0.5, 1)).replace("0.5,", "NaN,", 1),
           ce[2]: "{\n"}
    for t, text in bad.items():
        (trial_dir(study.out, t) / "metrics.json").write_text(text)
    report_ = consolidate_study(study.out)
    status = {r.trial.id: r.status for r in report_["missing"]}
    assert "macro_f1: 7.5 is not a score in [0, 1]" in status[ce[0].id] and "metrics.json" in status[ce[0].id]
    assert "not a finite number" in status[ce[1].id] or "not a score" in status[ce[1].id]
    assert f"{trial_dir(study.out, ce[2])}/metrics.json: not valid JSON" in status[ce[2].id]
    assert report_["partial"]  # reported, never averaged in silently
    assert "ce" not in {e.name for e in report_["estimates"] if e.complete}


def test_a_signal_stops_the_driver_with_the_resume_line(capsys):
    stopped = []
    with pytest.raises(Interrupted) as e:
        with graceful_stop(on_stop=stopped.append):
            signal.raise_signal(signal.SIGTERM)
    assert e.value.exit_code == 143 and stopped == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
    with pytest.raises(Interrupted) as e:
        with graceful_stop():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # the second one: at once
    assert e.value.exit_code == 130
    assert report(e.value, "tune/study.py", ["--dataset", "x"]) == 130
    err = capsys.readouterr().err
    assert "continue with python tune/study.py --dataset x --resume" in err and "Tuner.restore" not in err


def test_a_trial_ended_by_the_interruption_is_not_reported_failed(tmp_path):
    from types import SimpleNamespace

    from adpm_dist.tune.progress import ProgressTable

    info = Trial(0.5, 5, 0).record().to_dict() | {"config": {"run": {"output_dir": str(tmp_path)}}}
    trial = SimpleNamespace(config={"trial": info}, last_result={}, error_file=None)
    out = io.StringIO()
    table = ProgressTable([info], total_epochs=3, interval=0, stream=out)
    table.stop(signal.SIGINT)
    table.on_trial_error(0, [trial], trial)
    assert "FAILED" not in out.getvalue() and "--resume continues it" in out.getvalue()


def test_every_cli_parses_the_same_runner_arguments():
    from adpm_dist.tune.cli import search_noise, study as study_mod

    def flags(parser):
        return {a for action in parser._actions for a in action.option_strings}

    runner = {"--cpus-per-trial", "--gpus-per-trial", "--max-failures", "--early-stop-scope", "--address",
              "--dry-run", "--progress-interval"}
    assert runner <= flags(search_noise.build_parser()) & flags(study_mod.build_parser())


def test_isotropic_noise_trains_one_beta_in_a_study_as_in_the_grid():
    from adpm_dist.tune.grid import build_trials
    from adpm_dist.tune.study.spec import Candidate

    adpm = Candidate("adpm", "adpm", space={"noise.alpha": [0.0, 0.5], "noise.beta": [1.0, 5.0]})
    assert [p.settings for p in adpm.points()] == [{"noise.alpha": 0.0, "noise.beta": 1.0},
                                                   {"noise.alpha": 0.5, "noise.beta": 1.0},
                                                   {"noise.alpha": 0.5, "noise.beta": 5.0}]
    assert [(p.settings["noise.alpha"], p.settings["noise.beta"]) for p in adpm.points()] == \
        [(t.alpha, t.beta) for t in build_trials([0.0, 0.5], [1.0, 5.0], folds=2) if t.fold == 0]  # the grid's points
    isotropic = Candidate("adpm_isotropic", "adpm", fixed={"noise.alpha": 0.0}, space={"noise.beta": [1.0, 5.0]})
    assert len(isotropic.points()) == 1


def test_calibration_prices_a_candidate_without_a_record(fold_only_shards, tmp_path):
    """A short run of ce on one training fold, in this process (tiny config: seconds), then priced."""
    from adpm_dist.tune.calibrate import calibrated_epoch_cost, epoch_seconds
    from adpm_dist.tune.experiment import shard_parts
    from adpm_dist.tune.price import show_price
    from adpm_dist.tune.search import Resources
    from adpm_dist.tune.study.plan import plan_study
    from adpm_dist.tune.study.spec import build_candidates

    assert epoch_seconds([{"phase": "prior warm-up", "step": 4, "step_time_s": 0.5},
                          {"phase": "joint", "step": 8, "step_time_s": 1.0}], scale=2) == {"prior warm-up": 4.0, "joint": 8.0}
    folds = sum(p.startswith("fold") for p in shard_parts(fold_only_shards))
    spec = SearchSpec(dataset="imagefolder", config=TINY, output=str(tmp_path / "s"), overrides=["train.epochs=1"])
    s = plan_study(spec, build_candidates(["ce"]), fold_only_shards, folds, [0], resume=False)
    out = io.StringIO()
    total = show_price(s, Resources(), out, calibrate=True)
    assert total["unpriced"] == [] and total["cpu_hours"] > 0, out.getvalue()
    record = json.loads((s.out / "calibration" / "ce.json").read_text())
    assert record["val_s"] > 0 and record["overhead_s"] > 0  # a validation and the final evaluation, measured
    cost = calibrated_epoch_cost(s.out, "ce", EpochPlan(0, 1), 1)
    assert "--calibrate" in out.getvalue() and cost.wall_s > 0 and 0 < cost.cpu_s
    assert record["cpu_per_wall"] == pytest.approx(record["cpu_s"] / record["wall_s"])


def test_a_calibrated_trial_costs_its_overhead_its_phases_and_its_validations():
    """Closed forms of calibrate.trial_seconds over the three kinds of epoch plan."""
    from adpm_dist.methods.staged import StagedPlan
    from adpm_dist.tune.calibrate import phase_epochs, short_run_record, trial_seconds

    assert phase_epochs(EpochPlan(0, 30)) == [30] and phase_epochs(EpochPlan(10, 40)) == [10, 30]
    assert phase_epochs(StagedPlan(0, 40, stage2=30)) == [30, 10]
    record = {"epoch_s": {"prior warm-up": 1.0, "joint": 3.0}, "val_s": 2.0, "overhead_s": 20.0}
    assert trial_seconds(record, [10, 30], 6) == 20 + 10 * 1 + 30 * 3 + 6 * 2
    assert trial_seconds({"epoch_s": {"joint": 3.0}}, [10, 30], 6) == 40 * 3  # an older record: training only
    rows = [{"phase": "prior warm-up", "step": 4, "step_time_s": 0.5},
            {"phase": "joint", "step": 8, "step_time_s": 1.0, "val_time_s": 1.5}]
    made = short_run_record(rows, wall_s=10.0, scale=2)
    assert made["epoch_s"] == {"prior warm-up": 4.0, "joint": 8.0} and made["val_s"] == 3.0
    assert made["overhead_s"] == 10.0 - (2.0 + 4.0) - 1.5  # the wall time the epochs and validation do not explain
    # two joint epochs: the second (warm) is timed, the first (cold) is neither the epoch cost nor overhead
    rows = [{"phase": "joint", "step": 4, "step_time_s": 1.0}, {"phase": "joint", "step": 8, "step_time_s": 0.5,
                                                              "val_time_s": 1.5}]
    made = short_run_record(rows, wall_s=10.0, scale=2)
    assert made["epoch_s"] == {"joint": 4.0} and made["overhead_s"] == 10.0 - (4.0 + 2.0) - 1.5
    assert "cpu_per_wall" not in made  # no CPU time measured: priced as wall x CPUs, as before


def test_a_calibration_under_load_prices_the_same_cpu_hours(tmp_path):
    """The same short run measured quiet (wall 10 s, CPU 9 s) and beside another job (wall 20 s: every phase
    stretched, CPU still 9 s): the wall per epoch doubles, the CPU seconds per epoch do not."""
    from adpm_dist.tune.calibrate import CALIBRATION_DIR, calibrated_epoch_cost, short_run_record

    def priced(name, stretch):
        rows = [{"phase": "joint", "step": 8, "step_time_s": 0.5 * stretch, "val_time_s": 1.0 * stretch}]
        record = short_run_record(rows, wall_s=10.0 * stretch, scale=2, cpu_s=9.0)
        (tmp_path / CALIBRATION_DIR).mkdir(exist_ok=True)
        (tmp_path / CALIBRATION_DIR / f"{name}.json").write_text(json.dumps(record))
        return calibrated_epoch_cost(tmp_path, name, EpochPlan(0, 30), 6)

    quiet, loaded = priced("quiet", 1.0), priced("loaded", 2.0)
    assert loaded.wall_s == pytest.approx(2 * quiet.wall_s) and loaded.cpu_s == pytest.approx(quiet.cpu_s)
    assert quiet.cpu_s == pytest.approx(quiet.wall_s * 0.9)


def test_an_attempts_cost_is_kept_epoch_by_epoch(tmp_path):
    from adpm_dist.tune.trainable import AttemptCost

    res = {"workers": 1, "cpus": 1.0, "gpus": 0.0}
    first = AttemptCost(tmp_path, res)
    first.tick()
    c = first.tick()  # two epochs of one attempt (then killed: nothing more is added)
    assert c["attempts"] == 1 and c["wall_s"] > 0 and "cpu_s" in c
    c = AttemptCost(tmp_path, res).tick()  # the retry
    assert c["attempts"] == 2


def test_the_calibration_run_starts_from_scratch_and_keeps_nothing(tmp_path):
    """A prefix-derived or source trial is priced as the training it would do alone (its short run carried
    train.prefix_from before, and was refused for want of a prefix that did not exist yet)."""
    from adpm_dist.tune.calibrate import calibration_settings

    cfg = load_config(TINY, ["train.prefix_from=/elsewhere/run", "train.keep_prefix=true", "train.keep_validated=true"])
    short = calibration_settings(cfg, tmp_path)
    assert short["train.prefix_from"] == "" and not short["train.keep_prefix"] and not short["train.keep_validated"]
