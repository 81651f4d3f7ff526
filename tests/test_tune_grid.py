"""The search's plan without Ray: grid, alpha = 0 shortcut, nested CV, per-trial configs and parts, typed
values into trials, shards checks, CLI parsing."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from adpm_dist.config import ConfigError, config_fingerprint, load_config, save_config, set_key, to_dict
from adpm_dist.tune.experiment import SEARCH_FILE, supports_resume, write_search
from adpm_dist.tune.grid import GridSpec
from adpm_dist.tune.grid import (Trial, build_trials, check_overrides, label, parse_values, plan_search, shared_source,
                                 trial_config)
from adpm_dist.tune.protocol import HELD_OUT, NESTED, checkpoint_selection_parts, choose_protocol
from adpm_dist.tune.search import Resources, trial_payloads
from adpm_dist.tune.shards import resolve_shards
from adpm_dist.tune.trainable import trial_config_of

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs/digits_lt_tiny.yaml")


def fake_shards(path: Path, parts: list[str]) -> Path:
    """A manifest.json with just the part names: all the planning reads."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "manifest.json").write_text(json.dumps({"parts": {p: {} for p in parts}}), encoding="utf-8")
    return path


def load_cli():
    spec = importlib.util.spec_from_file_location("search_noise", ROOT / "tune/search_noise.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_values_accept_fractions_commas_and_separate_arguments():
    assert parse_values(["0,1/6", "1/4", "1/2,1"], "--alphas") == [0, 1 / 6, 0.25, 0.5, 1.0]
    assert parse_values(["5", "5.0", "2.5"], "--betas") == [5.0, 2.5]  # duplicates dropped, order kept
    for bad in ("abc", "1/0", "-1"):
        with pytest.raises(ValueError, match="--alphas"):
            parse_values([bad], "--alphas")
    assert [label(a) for a in (0, 1 / 6, 0.25, 1)] == ["0", "1/6", "1/4", "1"]
    assert label(2.5, fraction=False) == "2.5" and label(5.0, fraction=False) == "5"


def test_grid_trains_alpha_zero_once():
    alphas, betas = [0, 1 / 6, 0.5], [1, 5, 10]
    trials = build_trials(alphas, betas, folds=5)
    assert len(trials) == (1 + 2 * 3) * 5  # alpha = 0: one beta only
    assert {t.beta for t in trials if t.alpha == 0} == {1}
    assert len({t.id for t in trials}) == len(trials)
    assert Trial(1 / 6, 5, 2).id == "alpha1-6_beta5_fold2" and Trial(1 / 6, 5, 2).eval_part == "fold2"
    assert shared_source(Trial(0, 10, 3), betas) == Trial(0, 1, 3)
    assert shared_source(Trial(0.5, 10, 3), betas) == Trial(0.5, 10, 3)
    # The paper's full grid: 1 + 4 x 10 configurations x 5 folds.
    assert len(build_trials(parse_values(["0,1/6,1/4,1/2,1"], "a"), list(range(1, 11)), 5)) == 205
    with pytest.raises(ValueError, match="folds"):
        build_trials([0], [1], folds=1)


def test_trial_config_sets_protocol_keys(tmp_path):
    base = load_config(TINY, ["data.shards=/abs/shards", "data.train_parts=fold0"])
    cfg = trial_config(base, Trial(0.25, 5, 1), tmp_path, folds=3)
    assert (cfg.noise.alpha, cfg.noise.beta) == (0.25, 5)
    assert cfg.data.eval_part == "fold1" and cfg.data.train_parts == ["fold0", "fold2"]  # every other fold
    assert cfg.run.output_dir == str(tmp_path / "trials" / "alpha1-4_beta5_fold1")
    if supports_resume():
        assert cfg.train.resume == "auto"  # retries continue from the last checkpoint in the stable dir
    assert base.data.eval_part == "test" and base.noise.beta == 5.0 and base.noise.alpha == 1 / 6  # untouched
    assert base.data.train_parts == ["fold0"]


def test_reserved_keys_are_refused():
    with pytest.raises(ConfigError, match="noise.alpha.*--alphas"):
        check_overrides(["train.epochs=1", "noise.alpha=0.5"])
    with pytest.raises(ConfigError, match="run.output_dir"):
        check_overrides(["run.output_dir=/x"])


def test_real_datasets_need_their_files(tmp_path):
    with pytest.raises(ValueError) as err:
        resolve_shards("pad_ufes", None, tmp_path, 5)
    text = str(err.value)
    assert "--root /path/to/pad_ufes" in text and "--shards" in text
    assert "python -m adpm_dist.data.prepare --dataset pad_ufes --root /path/to/pad_ufes" in text and "--folds 5" in text
    with pytest.raises(ValueError, match="no reader"):
        resolve_shards("nosuch", None, tmp_path, 5)


def test_shards_must_be_folds(digits_shards, tmp_path):
    # The session fixture has train + test parts, not folds.
    with pytest.raises(ValueError, match="fold0..fold"):
        resolve_shards("digits_lt", str(digits_shards), tmp_path, None)
    with pytest.raises(FileNotFoundError, match="prepare"):
        resolve_shards("digits_lt", str(tmp_path / "nothing"), tmp_path, 2)


def test_resume_rules(tmp_path):
    spec = GridSpec(dataset="digits_lt", config=TINY, output=str(tmp_path), alphas=[0, 0.5], betas=[5], folds=2)
    shards = fake_shards(tmp_path / "shards", ["fold0", "fold1", "val", "test"])
    search = plan_search(spec, shards, 2, resume=False)
    assert len(search.todo) == 4
    write_search(search)
    with pytest.raises(FileExistsError, match="--resume"):
        plan_search(spec, shards, 2, resume=False)
    trained = search.config_of(search.trials[0])
    done = Path(trained.run.output_dir)
    save_config(trained, done / "config.yaml")  # what the engine leaves in a finished trial
    (done / "metrics.json").write_text(json.dumps({"config_fingerprint": config_fingerprint(trained)}))
    assert len(plan_search(spec, shards, 2, resume=True).todo) == 3  # finished trial skipped
    set_key(trained, "train.batch_size", 3)  # a trial finished with other settings is refused, named
    save_config(trained, done / "config.yaml")
    (done / "metrics.json").write_text(json.dumps({"config_fingerprint": config_fingerprint(trained)}))
    with pytest.raises(ValueError, match="differs in train.batch_size"):
        plan_search(spec, shards, 2, resume=True)
    changed = GridSpec(**{**spec.__dict__, "overrides": ["train.lr=0.5"]})
    with pytest.raises(ValueError, match="train.lr"):
        plan_search(changed, shards, 2, resume=True)
    assert json.loads((tmp_path / SEARCH_FILE).read_text())["folds"] == 2


def test_resume_accepts_a_search_stored_before_new_keys_existed(tmp_path):
    """An upgrade that adds an off-by-default key (data.crop, train.keep_validated, ...) must not refuse the
    --resume of an earlier experiment: the stored config reads with today's defaults."""
    spec = GridSpec(dataset="digits_lt", config=TINY, output=str(tmp_path), alphas=[0], betas=[5], folds=2)
    shards = fake_shards(tmp_path / "shards", ["fold0", "fold1", "val", "test"])
    write_search(plan_search(spec, shards, 2, resume=False))
    stored = json.loads((tmp_path / SEARCH_FILE).read_text())
    del stored["base_config"]["data"]["crop"], stored["base_config"]["train"]["keep_validated"]  # as an old version wrote it
    (tmp_path / SEARCH_FILE).write_text(json.dumps(stored))
    assert len(plan_search(spec, shards, 2, resume=True).todo) == 2
    stored["base_config"]["train"]["lr"] = 0.5  # a real difference is still named
    (tmp_path / SEARCH_FILE).write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="train.lr"):
        plan_search(spec, shards, 2, resume=True)


def test_resources_are_checked():
    Resources(cpus_per_trial=2, workers_per_trial=2, gpus_per_trial=1).check()
    with pytest.raises(ValueError, match="whole GPUs"):
        Resources(workers_per_trial=2, gpus_per_trial=0.5).check()
    assert Resources(cpus_per_trial=1, gpus_per_trial=0.5).trial_bundle() == {"cpu": 1, "gpu": 0.5}
    assert Resources(cpus_per_trial=1, workers_per_trial=2).trial_bundle()["cpu"] < 1  # the driver only waits


def test_cli_parsing(tmp_path, capsys):
    cli = load_cli()
    args = cli.parse_args(["--dataset", "digits_lt", "--alphas", "0,1/6", "--betas", "5", "train.epochs=1",
                              "--folds", "2", "diffusion.test_timesteps=2"])
    assert args.betas == ["5"] and args.overrides == ["train.epochs=1", "diffusion.test_timesteps=2"]
    assert cli.resolve_config(None, "digits_lt") == ROOT / "configs/digits_lt.yaml"
    with pytest.raises(FileNotFoundError, match="configs/nosuch.yaml"):
        cli.resolve_config(None, "nosuch")
    # Errors before any Ray start, with exit code 2 and the key in the message.
    assert cli.main(["--dataset", "digits_lt", "--output", str(tmp_path), "noise.beta=3"]) == 2
    assert "noise.beta is set by the search" in capsys.readouterr().err
    assert cli.main(["--dataset", "digits_lt", "--output", str(tmp_path), "train.epochz=3"]) == 2
    assert "train.epochz" in capsys.readouterr().err
    assert cli.main(["--dataset", "pad_ufes", "--config", TINY, "--output", str(tmp_path)]) == 2
    assert "--root /path/to/pad_ufes" in capsys.readouterr().err
    assert not (tmp_path / SEARCH_FILE).exists()  # nothing planned, no cluster started


def test_multi_worker_trials_need_enough_shards():
    from types import SimpleNamespace

    from adpm_dist.tune.shards import check_shard_counts

    m = SimpleNamespace(root=Path("/s"), parts={"fold0": ["a", "b"], "fold1": ["c"], "test": ["d"]},
                        num_samples={"fold0": 200, "fold1": 190, "test": 50})
    check_shard_counts(m, 1, "digits_lt")
    with pytest.raises(ValueError, match=r"'fold1': 1.*--samples-per-shard 95"):
        check_shard_counts(m, 2, "digits_lt")


def test_nested_trials_never_train_on_their_outer_fold():
    trials = build_trials([0, 0.5], [1, 5], folds=3, nested=True)
    cv = [t for t in trials if t.outer is None]
    inner = [t for t in trials if t.outer is not None]
    assert len(cv) == 3 * 3 and len(inner) == 3 * 3 * 2  # 3 grid points (alpha = 0 once) x K, and x K x (K - 1)
    assert len({t.id for t in trials}) == len(trials)
    for t in inner:
        assert t.fold != t.outer and t.eval_part == f"fold{t.fold}"
        assert t.train_folds(3) == [f"fold{k}" for k in range(3) if k not in (t.fold, t.outer)]
    assert Trial(0.5, 5, 1, outer=2).id == "outer2_alpha1-2_beta5_fold1"
    assert Trial(0.5, 5, 1).train_folds(3) == ["fold0", "fold2"]
    assert shared_source(Trial(0, 5, 1, outer=2), [1, 5]) == Trial(0, 1, 1, outer=2)
    with pytest.raises(ValueError, match="nested CV needs >= 3 folds"):
        build_trials([0], [1], folds=2, nested=True)


def test_protocol_follows_the_shards(tmp_path):
    assert choose_protocol(["fold0", "fold1", "val", "test"]) == HELD_OUT
    assert choose_protocol(["fold0", "fold1", "fold2"]) == NESTED
    # Checkpoint selection: the `val` part when there is one, else a carve-out of the training folds.
    assert checkpoint_selection_parts(["fold1"], ["fold0", "fold1", "val"], "auto", "fold0") == ["val"]
    assert checkpoint_selection_parts(["fold1", "fold2"], ["fold0", "fold1", "fold2"], "auto", "fold0") == ["fold1", "fold2"]

    spec = GridSpec(dataset="pad_ufes", config=TINY, output=str(tmp_path / "exp"), alphas=[0, 0.5], betas=[5])
    folds_only = fake_shards(tmp_path / "folds", ["fold0", "fold1", "fold2"])
    search = plan_search(spec, folds_only, 3, resume=False)
    assert search.protocol == NESTED and len(search.trials) == 2 * 3 * 3
    assert search.manifest()["protocol"] == NESTED
    cfg = search.config_of(Trial(0.5, 5, 0, outer=1))
    assert cfg.data.eval_part == "fold0" and cfg.data.train_parts == ["fold2"]
    with pytest.raises(ValueError, match="nested CV, which needs >= 3 folds"):
        plan_search(spec, fake_shards(tmp_path / "two", ["fold0", "fold1"]), 2, resume=False)
    with_test = fake_shards(tmp_path / "with_test", ["fold0", "fold1", "fold2", "test"])
    assert plan_search(spec, with_test, 3, resume=False).protocol == HELD_OUT
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        plan_search(spec, tmp_path / "nothing", 3, resume=False)


def test_typed_values_reach_the_trial_verbatim(tmp_path):
    """A shard path YAML would cut at " #" (and with spaces, non-ASCII) arrives in the trial as it was."""
    shards = fake_shards(tmp_path / "run #2" / "données über 9 ✓", ["fold0", "fold1", "fold2"])
    out = tmp_path / "exp #3 ünï"
    spec = GridSpec(dataset="pad_ufes", config=TINY, output=str(out), alphas=[0.5], betas=[5],
                      overrides=["train.epochs=1"])
    search = plan_search(spec, shards.resolve(), 3, resume=False)
    assert search.base.data.shards == str(shards.resolve())
    payloads = json.loads(json.dumps(trial_payloads(search)))  # what Ray serialises, as plain values
    assert len(payloads) == len(search.trials)
    for payload in payloads:
        cfg = trial_config_of(payload)  # what the trainable runs
        assert cfg.data.shards == str(shards.resolve())
        assert cfg.run.output_dir.startswith(str(out.resolve() / "trials"))
        assert payload["settings"]["data.train_parts"] == cfg.data.train_parts
        assert cfg.train.epochs == 1 and (cfg.noise.alpha, cfg.noise.beta) == (0.5, 5.0)
    write_search(search)
    assert json.loads((out / SEARCH_FILE).read_text(encoding="utf-8"))["base_config"]["data"]["shards"] == str(
        shards.resolve())
    assert to_dict(search.base)["data"]["shards"] == str(shards.resolve())


def test_trial_epochs_follow_the_method():
    """ASHA's horizon and the progress table count the epochs the method trains (no warm-up for a classifier)."""
    from adpm_dist.tune.search import epochs_per_trial

    adpm = load_config(TINY, ["train.epochs=4", "train.prior_warmup_epochs=3"])
    ce = load_config(TINY, ["train.epochs=4", "train.prior_warmup_epochs=3", "method=ce"])
    assert epochs_per_trial(adpm) == 7 and epochs_per_trial(ce) == 4


def test_the_grid_is_the_adpm_preset_of_a_study(tmp_path):
    """The grid plans through the study planner: one candidate `adpm` whose space is {noise.alpha, noise.beta},
    alpha = 0 once (its no_effect rule); search.json records it, and one written without it still resumes."""
    from adpm_dist.tune.study.trials import StudyTrial, expand

    spec = GridSpec(dataset="digits_lt", config=TINY, output=str(tmp_path), alphas=[0, 0.5], betas=[1, 5], folds=3)
    shards = fake_shards(tmp_path / "shards", ["fold0", "fold1", "fold2"])  # fold-only: nested CV
    search = plan_search(spec, shards, 3, resume=False)
    preset = search.manifest()["candidates"]
    assert [(c["name"], c["method"], c["space"]) for c in preset] == [
        ("adpm", "adpm", {"noise.alpha": [0, 0.5], "noise.beta": [1, 5]})]
    assert [p["settings"] for p in preset[0]["points"]] == [{"noise.alpha": 0, "noise.beta": 1},
                                                         {"noise.alpha": 0.5, "noise.beta": 1},
                                                         {"noise.alpha": 0.5, "noise.beta": 5}]
    as_study = expand([search.candidate], 3, [0], nested=True)  # the same expansion, named as a study's trials
    assert [(t.fold, t.outer) for t in search.trials] == [(t.fold, t.outer) for t in as_study]
    assert all(isinstance(t, StudyTrial) for t in as_study) and len(search.trials) == 3 * 3 + 3 * 3 * 2
    write_search(search)
    stored = json.loads((tmp_path / SEARCH_FILE).read_text())
    del stored["candidates"]  # as the grid's own planner wrote it
    (tmp_path / SEARCH_FILE).write_text(json.dumps(stored))
    assert [t.id for t in plan_search(spec, shards, 3, resume=True).todo] == [t.id for t in search.trials]
