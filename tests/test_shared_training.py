"""Shared training in a study (study/shared.py): the planner marks the trials that train exactly what
another trial trains as derived from it, the driver replays them after their source, and --resume
skips the finished ones. No training and no Ray: the replay itself is faked here (tests/test_replay.py
checks it is exact)."""
from __future__ import annotations

import json
from pathlib import Path

import yaml
from test_tune_consolidate import TINY, fake_metrics

from adpm_dist.config import save_config
from adpm_dist.tune.experiment import SearchSpec, trial_dir, write_search
from adpm_dist.tune.price import plan_rows, replayed_counts
from adpm_dist.tune import release
from adpm_dist.tune.study import shared
from adpm_dist.tune.study.plan import plan_study
from adpm_dist.tune.study.spec import build_candidates


def plan(tmp_path, names, space=None, overrides=("train.epochs=1",), resume=False,
         parts=("fold0", "fold1", "fold2", "test"), share=True):
    shards = tmp_path / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    (shards / "manifest.json").write_text(json.dumps({"parts": {p: {} for p in parts}}))
    space_file = None
    if space:
        (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
        space_file = str(tmp_path / "space.yaml")
    spec = SearchSpec(dataset="imagefolder", config=TINY, output=str(tmp_path / "study"),
                      overrides=list(overrides))
    return plan_study(spec, build_candidates(names, space_file), shards, 3, [0, 1], resume=resume, share=share)


def test_posthoc_la_is_derived_from_ce(tmp_path):
    s = plan(tmp_path, ["ce", "posthoc_la", "logit_adjusted"])
    by_id = {t.id: t for t in s.trials}
    derived = [t for t in s.trials if t.derived_from]
    assert {t.candidate for t in derived} == {"posthoc_la"} and len(derived) == 3 * 2
    for t in derived:
        source = by_id[t.derived_from]
        assert (source.candidate, source.fold, source.seed, source.outer) == ("ce", t.fold, t.seed, t.outer)
        assert s.config_of(source).train.keep_validated and not s.config_of(t).train.keep_validated
    assert not any(s.config_of(t).train.keep_validated for t in s.trials if t.candidate == "logit_adjusted")
    write_search(s)  # search.json says which trials are derived, and from what
    stored = {t["id"]: t for t in json.loads((s.out / "search.json").read_text())["trials"]}
    assert all(stored[t.id]["derived_from"] == t.derived_from for t in s.trials)
    # the price trains only the sources; the derived trials are listed apart
    la = sum(t.candidate == "logit_adjusted" for t in s.todo)
    assert {r.name: r.trials for r in plan_rows(s)} == {"ce": 6, "logit_adjusted": la} and la == 6 * 4
    assert replayed_counts(s) == {"posthoc_la": 6}


def test_no_share_trains_every_trial_itself(tmp_path):
    """--no-share (to measure what sharing saves): no trial is derived, none keeps its validated weights."""
    s = plan(tmp_path, ["ce", "posthoc_la"], share=False)
    assert not any(t.derived_from for t in s.trials) and not s.sources
    assert not any(s.config_of(t).train.keep_validated for t in s.trials)
    assert {r.name: r.trials for r in plan_rows(s)} == {"ce": 6, "posthoc_la": 6} and replayed_counts(s) == {}


def test_nothing_is_derived_without_the_twin_or_with_other_training(tmp_path):
    s = plan(tmp_path, ["ce", "posthoc_la"], overrides=("train.epochs=1", "baseline.posthoc_base=focal"))
    assert not any(t.derived_from for t in s.trials)  # posthoc_la trains focal: no candidate does
    s = plan(tmp_path / "b", ["focal", "posthoc_la"], overrides=("train.epochs=1", "baseline.posthoc_base=focal"))
    assert {t.candidate for t in s.trials if t.derived_from} == {"posthoc_la"}
    s = plan(tmp_path / "c", ["ce", "posthoc_la"], space={"posthoc_la": {"train.lr": [0.01]}})
    assert not any(t.derived_from for t in s.trials)  # another learning rate: another training


def test_adpm_prior_readout_points_share_nested_trials(tmp_path):
    s = plan(tmp_path, ["adpm"], space={"adpm": {"model.prior_readout": ["raw", "posthoc_la"]}},
             parts=("fold0", "fold1", "fold2"))
    assert s.protocol == "nested"
    derived = [t for t in s.trials if t.derived_from]
    assert derived and all(t.point == "prior_readoutposthoc_la" for t in derived)
    assert len(derived) == len([t for t in s.trials if t.point == "prior_readoutraw"])  # inner trials too
    by_id = {t.id: t for t in s.trials}
    assert all(by_id[t.derived_from].outer == t.outer for t in derived)


def fake_replay(calls):
    def replay(cfg, source):
        out = Path(cfg.run.output_dir)
        calls.append((out.name, Path(source).name))
        save_config(cfg, out / "config.yaml")
        (out / "metrics.json").write_text(json.dumps(fake_metrics(0.5, 0)))
    return replay


def finish(s, t):
    """A source trial as Ray leaves it: its config, metrics and validated weights."""
    d = trial_dir(s.out, t)
    (d / "checkpoints" / "validated").mkdir(parents=True, exist_ok=True)
    (d / "checkpoints" / "validated" / "epoch_0001.pt").write_bytes(b"")
    save_config(s.config_of(t), d / "config.yaml")
    (d / "metrics.json").write_text(json.dumps(fake_metrics(0.5, t.fold)))


def test_the_driver_replays_after_the_sources_and_resume_skips_them(tmp_path, monkeypatch):
    import adpm_dist.runtime.replay as replay_module

    calls = []
    monkeypatch.setattr(replay_module, "replay", fake_replay(calls))
    s = plan(tmp_path, ["ce", "posthoc_la"])
    write_search(s)
    wave = [t for t in s.todo if t.fold == 0]

    def run_on_ray():  # what Ray would do: train every trial it is given
        assert not any(t.derived_from for t in s.todo)
        for t in s.todo:
            finish(s, t)

    status = shared.run_then_replay(s, wave, run_on_ray, say=lambda line: None)
    assert set(status) == {t.id for t in wave if t.derived_from} and set(status.values()) == {"replayed"}
    assert sorted(calls) == sorted((t.id, t.derived_from) for t in wave if t.derived_from)
    for t in wave:
        if t.derived_from:
            cost = json.loads((trial_dir(s.out, t) / "cost.json").read_text())
            assert cost["replayed_from"] == t.derived_from and cost["cpu_s"] >= 0 and cost["attempts"] == 1

    resumed = plan(tmp_path, ["ce", "posthoc_la"], resume=True)
    assert {t.id for t in resumed.todo} == {t.id for t in s.trials if t.fold != 0}


def test_a_derived_trial_whose_source_does_not_run_trains_itself(tmp_path):
    s = plan(tmp_path, ["ce", "posthoc_la"])
    derived = [t for t in s.todo if t.derived_from]
    trained, replays = shared.split(s, derived)  # e.g. ce raced out, or cut by --max-trials
    assert trained == derived and replays == []
    status = shared.replay_derived(s, derived[:1], say=lambda line: None)
    assert status == {derived[0].id: "source not finished"}


def test_race_keeps_a_replayed_source_and_a_derived_trial_without_one_trains_itself(tmp_path, monkeypatch):
    """ce is clearly worse after two waves, but posthoc_la (right everywhere, as logit_adjusted) replays ce's
    weights, so ce keeps running and posthoc_la is replayed in every wave. A race resumed from a raced.json
    that dropped ce (an earlier version's) trains posthoc_la itself, where ce no longer runs."""
    import adpm_dist.runtime.replay as replay_module
    from test_study_race import LABELS

    from adpm_dist.tune.study.race import RACED_FILE, race

    def run(where, dropped: bool):
        s = plan(where, ["ce", "posthoc_la", "logit_adjusted"], space={"logit_adjusted": {"baseline.la_tau": [1.0]}})
        assert s.protocol == "held_out_test"
        write_search(s)
        by_id = {t.id: t for t in s.trials}

        def write(t):
            preds = ["head" if y == "tail" else y for y in LABELS] if t.candidate == "ce" else list(LABELS)
            d = trial_dir(s.out, t)
            (d / "checkpoints" / "validated").mkdir(parents=True, exist_ok=True)
            (d / "checkpoints" / "validated" / "epoch_0001.pt").write_bytes(b"")
            save_config(s.config_of(t), d / "config.yaml")
            (d / "metrics.json").write_text(json.dumps(fake_metrics(0.8, t.fold)))
            rows = ["key,label,prediction"] + [f"f{t.fold}k{i},{y},{p}" for i, (y, p) in enumerate(zip(LABELS, preds))]
            (d / "predictions.csv").write_text("\n".join(rows) + "\n")

        trained, replayed = [], []
        monkeypatch.setattr(replay_module, "replay",
                            lambda cfg, source: (replayed.append(Path(cfg.run.output_dir).name),
                                                 write(by_id[Path(cfg.run.output_dir).name])))

        def ray():
            trained.extend(t.id for t in s.todo)
            for t in s.todo:
                write(t)

        if dropped:
            (s.out / RACED_FILE).write_text(json.dumps({"ce": {"wave": 2}}))
        raced = race(s, lambda trials: shared.run_then_replay(s, trials, ray, say=lambda line: None),
                     say=lambda line: None)
        return s, raced, [by_id[i] for i in trained], replayed

    s, raced, trained, replayed = run(tmp_path / "kept", dropped=False)
    la = [t.id for t in s.trials if t.candidate == "posthoc_la"]
    ce = sorted(t.id for t in s.trials if t.candidate == "ce")
    assert raced == {} and sorted(replayed) == sorted(la) and sorted(t.id for t in trained if t.candidate == "ce") == ce
    s, raced, trained, replayed = run(tmp_path / "dropped", dropped=True)
    assert list(raced) == ["ce"] and replayed == [] and not any(t.candidate == "ce" for t in trained)
    assert sorted(t.id for t in trained if t.candidate == "posthoc_la") == sorted(la)


def test_ctrl_c_while_replaying_is_the_studys_interruption(tmp_path, monkeypatch):
    import pytest

    import adpm_dist.runtime.replay as replay_module
    from adpm_dist.tune.interrupt import Interrupted

    def interrupted(cfg, source):
        raise KeyboardInterrupt

    monkeypatch.setattr(replay_module, "replay", interrupted)
    s = plan(tmp_path, ["ce", "posthoc_la"])
    t = next(t for t in s.trials if t.derived_from)
    finish(s, next(src for src in s.trials if src.id == t.derived_from))
    with pytest.raises(Interrupted):
        shared.replay_derived(s, [t], say=lambda line: None)
    assert not (trial_dir(s.out, t) / "metrics.json").exists()  # unfinished: --resume replays it
    assert json.loads((trial_dir(s.out, t) / "cost.json").read_text())["replayed_from"] == t.derived_from


def test_points_that_differ_after_their_prefix_start_from_one_source(tmp_path):
    """MiSLAS's points differ only in stage-2 smoothing: per (fold, seed) one trains stage 1 and keeps it, the
    others start from it. ADPM's noise points and its adjusted chain's share the prior warm-up; cRT and LWS
    share their stage 1 (CE's training; their stage-2 modules are their own)."""
    s = plan(tmp_path, ["mislas", "crt", "lws"], space={"crt": {"baseline.stage2_epochs": [1, 2]}})
    by_id = {t.id: t for t in s.trials}
    for names, points in ((("mislas",), 6), (("crt", "lws"), 3)):
        group = [t for t in s.trials if t.candidate in names]
        starts = [t for t in group if t.prefix_from]
        assert len(starts) == (points - 1) * 3 * 2
        for t in starts:
            source = by_id[t.prefix_from]
            assert (source.candidate, source.fold, source.seed, source.prefix_from) == (names[0], t.fold, t.seed, None)
            assert s.config_of(source).train.keep_prefix and not s.config_of(t).train.keep_prefix
            assert s.config_of(t).train.prefix_from == str(trial_dir(s.out, source))
    write_search(s)
    stored = {t["id"]: t for t in json.loads((s.out / "search.json").read_text())["trials"]}
    assert all(stored[t.id]["prefix_from"] == t.prefix_from for t in s.trials)
    total = {"mislas": s.config_of(s.trials[0]).train.epochs + s.config_of(s.trials[0]).baseline.stage2_epochs}
    rows = {(r.name, r.from_prefix): (r.trials, r.epochs) for r in plan_rows(s)}  # the price: stage 2 only
    assert rows[("mislas", False)] == (6, total["mislas"]) and rows[("mislas", True)] == (30, total["mislas"] - 1)

    s = plan(tmp_path / "adpm", ["adpm", "adpm_adjusted_chain"], overrides=("train.epochs=1", "train.prior_warmup_epochs=1"),
             space={"adpm": {"noise.alpha": [0.0, 0.5]}, "adpm_adjusted_chain": {"model.chain_tau": [0.5, 1.0]}})
    by_id = {t.id: t for t in s.trials}
    starts = [t for t in s.trials if t.prefix_from]
    assert len(starts) == 3 * 3 * 2 and {by_id[t.prefix_from].candidate for t in starts} == {"adpm"}  # one warm-up
    s = plan(tmp_path / "mixup", ["mislas"], space={"mislas": {"baseline.mislas_mixup_alpha": [0.5, 1.0]}})
    assert not any(t.prefix_from for t in s.trials)  # mixup acts in stage 1: nothing to share
    s = plan(tmp_path / "nowarmup", ["adpm"], overrides=("train.epochs=1", "train.prior_warmup_epochs=0"),
             space={"adpm": {"noise.alpha": [0.0, 0.5]}})
    assert not any(t.prefix_from for t in s.trials)


def test_crt_and_lws_start_their_stage_2_from_ce_whatever_the_order(tmp_path):
    """CE's whole training is cRT's and LWS's stage 1: every cRT and LWS trial starts from CE's trial of its
    (fold, seed), even listed before it; CE never starts from theirs, and posthoc_la still replays CE."""
    s = plan(tmp_path, ["crt", "lws", "ce", "posthoc_la"])
    by_id = {t.id: t for t in s.trials}
    for t in s.trials:
        if t.candidate in ("crt", "lws"):
            source = by_id[t.prefix_from]
            assert (source.candidate, source.fold, source.seed) == ("ce", t.fold, t.seed)
        else:
            assert t.prefix_from is None
    assert {t.id for t in s.trials if t.candidate == "ce"} == s.prefix_sources
    assert all(s.config_of(by_id[i]).train.keep_prefix for i in s.prefix_sources)
    assert {by_id[t.derived_from].candidate for t in s.trials if t.derived_from} == {"ce"}
    cfg = s.config_of(s.trials[0])
    rows = {(r.name, r.from_prefix): (r.trials, r.epochs) for r in plan_rows(s)}  # the price: their stage 2 only
    assert rows[("crt", True)] == rows[("lws", True)] == (6, cfg.baseline.stage2_epochs)
    assert ("crt", False) not in rows and rows[("ce", False)] == (6, cfg.train.epochs)


def keep_prefix(s, t):
    """What a source trial leaves once past its prefix: checkpoints/prefix/step_*/trainer_state.json."""
    d = trial_dir(s.out, t) / "checkpoints" / "prefix" / "step_00000001"
    d.mkdir(parents=True, exist_ok=True)
    (d / "trainer_state.json").write_text("{}")


def test_a_trial_that_starts_from_a_prefix_trains_in_a_second_ray_pass(tmp_path):
    s = plan(tmp_path, ["mislas"], space={"mislas": {"baseline.mislas_smooth_tail": [0.0, 0.1]}})
    write_search(s)
    wave = [t for t in s.todo if t.fold == 0]
    passes = []

    def run_on_ray():  # what Ray would do: each trial keeps its prefix on the way
        passes.append([(t.id, t.prefix_from, str(s.config_of(t).train.prefix_from)) for t in s.todo])
        for t in s.todo:
            keep_prefix(s, t)
            finish(s, t)

    shared.run_then_replay(s, wave, run_on_ray, say=lambda line: None)
    assert len(passes) == 2
    assert all(p is None for _, p, _ in passes[0]) and len(passes[0]) == len(passes[1]) == 2
    assert all(p and path.endswith(p) for _, p, path in passes[1])
    resumed = plan(tmp_path, ["mislas"], space={"mislas": {"baseline.mislas_smooth_tail": [0.0, 0.1]}}, resume=True)
    assert {t.id for t in resumed.todo} == {t.id for t in s.trials if t.fold != 0}  # --resume: both passes done

    # a trial whose source neither runs now nor kept its prefix trains from epoch 0, in the first pass
    late = next(t for t in s.trials if t.prefix_from and t.fold == 1)
    passes.clear()
    shared.run_then_replay(s, [late], run_on_ray, say=lambda line: None)
    assert passes == [[(late.id, None, "")]]
    # ... and one whose source kept it (an earlier run of the study) starts from it at once
    early = next(t for t in s.trials if t.prefix_from and t.fold == 2)
    keep_prefix(s, next(t for t in s.trials if t.id == early.prefix_from))
    passes.clear()
    shared.run_then_replay(s, [early], run_on_ray, say=lambda line: None)
    assert [[p for _, p, _ in ps] for ps in passes] == [[early.prefix_from]]


def test_what_a_source_kept_for_others_is_released_once_they_have_all_finished(tmp_path):
    """checkpoints/validated (for replays) and checkpoints/prefix (for trials starting from it) are deleted
    when, and only when, every trial using them has metrics.json; a source's own files stay."""
    s = plan(tmp_path, ["ce", "posthoc_la"])
    derived = next(t for t in s.trials if t.derived_from)
    source = next(t for t in s.trials if t.id == derived.derived_from)
    finish(s, source)
    kept = trial_dir(s.out, source) / "checkpoints" / "validated"
    assert release.release_shared(s, say=lambda line: None) == [] and kept.is_dir()  # its replay has not run
    trial_dir(s.out, derived).mkdir(parents=True)
    (trial_dir(s.out, derived) / "metrics.json").write_text(json.dumps(fake_metrics(0.5, derived.fold)))
    said = []
    assert release.release_shared(s, say=said.append) == [kept] and not kept.exists()
    assert (trial_dir(s.out, source) / "metrics.json").is_file() and "released" in said[0]

    m = plan(tmp_path / "m", ["mislas"], space={"mislas": {"baseline.mislas_smooth_tail": [0.0, 0.1]}})
    follower = next(t for t in m.trials if t.prefix_from)
    first = next(t for t in m.trials if t.id == follower.prefix_from)
    keep_prefix(m, first)
    finish(m, first)
    prefix = trial_dir(m.out, first) / "checkpoints" / "prefix"
    assert release.release_shared(m, say=lambda line: None) == [] and prefix.is_dir()
    finish(m, follower)
    assert release.release_shared(m, say=lambda line: None) == [prefix] and not prefix.exists()


def test_a_finished_trials_resume_checkpoints_are_deleted_an_unfinished_ones_kept(tmp_path):
    """release_finished: checkpoints/step_* (and half-written ones) of a trial with metrics.json go; best.pt,
    validated weights and prefixes stay (release_shared's business); an unfinished trial keeps everything,
    since a retry resumes from it. run_then_replay does it unless keep_checkpoints."""
    s = plan(tmp_path, ["ce"])
    done, killed = s.trials[0], s.trials[1]
    for t in (done, killed):
        ckpt = trial_dir(s.out, t) / "checkpoints"
        for name in ("step_00000009", "step_00000018", ".tmp-step_00000027"):
            (ckpt / name).mkdir(parents=True)
            (ckpt / name / "trainer_state.json").write_text("{}")
        (ckpt / "best.pt").write_bytes(b"w")
    finish(s, done)
    removed = release.release_finished(s, [done, killed], say=lambda line: None)
    assert sorted(p.name for p in removed) == [".tmp-step_00000027", "step_00000009", "step_00000018"]
    left = trial_dir(s.out, done) / "checkpoints"
    assert sorted(p.name for p in left.iterdir()) == ["best.pt", "validated"]
    assert len(list((trial_dir(s.out, killed) / "checkpoints").iterdir())) == 4

    wave = [t for t in s.todo if t.fold == 2]
    for keep in (True, False):
        for t in wave:
            (trial_dir(s.out, t) / "checkpoints" / "step_00000009").mkdir(parents=True, exist_ok=True)
            (trial_dir(s.out, t) / "checkpoints" / "step_00000009" / "trainer_state.json").write_text("{}")
        shared.run_then_replay(s, wave, lambda: [finish(s, t) for t in s.todo], say=lambda line: None,
                               keep_checkpoints=keep)
        assert all((trial_dir(s.out, t) / "checkpoints" / "step_00000009").is_dir() == keep for t in wave)


def test_each_pass_runs_the_trials_with_most_epochs_to_train_first(tmp_path):
    """Longest first (Ray starts them in order, so a pass does not end on one long trial): ADPM (warm-up +
    joint epochs) before the classifiers in the first pass; in the second, ADPM's other points' and the
    adjusted chain's joint epochs before cRT's stage 2 (each less the prefix it starts from)."""
    s = plan(tmp_path, ["ce", "crt", "adpm", "adpm_adjusted_chain"],
             overrides=("train.epochs=3", "train.prior_warmup_epochs=2", "baseline.stage2_epochs=1"))
    write_search(s)
    wave = [t for t in s.todo if t.fold == 0 and t.seed == 0]
    passes = []

    def run_on_ray():
        passes.append([(t.candidate, shared.epochs_to_train(s, t)) for t in s.todo])
        for t in s.todo:
            keep_prefix(s, t)
            finish(s, t)

    shared.run_then_replay(s, wave, run_on_ray, say=lambda line: None)
    first, second = passes
    assert first == [("adpm", 5), ("ce", 3)]  # ADPM's first point; its other points start from its warm-up
    assert [e for _, e in second] == sorted((e for _, e in second), reverse=True) and second[-1] == ("crt", 1)
    assert {c for c, e in second if e == 3} == {"adpm", "adpm_adjusted_chain"}
