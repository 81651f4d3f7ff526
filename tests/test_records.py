"""Numbers that cannot silently mix: fingerprints, the resume rule, atomic writes and their
leftovers, and an engine that opens the evaluation part only for the final evaluation."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from adpm_dist.config import ConfigError, changed_keys, config_fingerprint, load_config, save_config, to_dict
from adpm_dist.files import atomic_write_json, is_leftover, remove_leftovers
from adpm_dist.runtime.checkpoint import check_resume_changes
from adpm_dist.runtime.record import code_version, stale_keys

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "digits_lt_tiny.yaml"


def test_fingerprint_ignores_paths_and_logging_but_not_settings():
    base = load_config(TINY)
    same = load_config(TINY, ["run.output_dir=/elsewhere", "train.log_every=1", "data.shards=http://127.0.0.1:1/x",
                              "train.keep_checkpoints=5"])
    other = load_config(TINY, ["train.lr=0.5", "noise.alpha=0"])
    assert config_fingerprint(base) == config_fingerprint(same)
    assert config_fingerprint(base) != config_fingerprint(other)
    assert changed_keys(base, other) == ["noise.alpha", "train.lr"]
    assert config_fingerprint(base, "data-a") != config_fingerprint(base, "data-b")
    assert code_version()  # e.g. 0.1.0+<commit>


def test_stale_keys_names_what_a_reused_run_was_trained_with(tmp_path):
    cfg = load_config(TINY)
    assert stale_keys(tmp_path, cfg) is None  # nothing finished here
    save_config(cfg, tmp_path / "config.yaml")
    atomic_write_json(tmp_path / "metrics.json", {"config_fingerprint": config_fingerprint(cfg)})
    assert stale_keys(tmp_path, cfg) == []
    assert stale_keys(tmp_path, load_config(TINY, ["run.output_dir=/x"])) == []
    assert stale_keys(tmp_path, load_config(TINY, ["train.epochs=7"])) == ["train.epochs"]


def test_resume_with_a_changed_config_stops_unless_the_change_is_allowed(tmp_path):
    saved = to_dict(load_config(TINY))  # the config a checkpoint stores
    with pytest.raises(ConfigError, match="train.epochs.*train.resume_changes=train.epochs"):
        check_resume_changes(load_config(TINY, ["train.epochs=9"]), saved, tmp_path)
    assert check_resume_changes(load_config(TINY, ["train.epochs=9", "train.resume_changes=train.epochs"]),
                                saved, tmp_path) == ["train.epochs"]
    assert check_resume_changes(load_config(TINY, ["train.log_every=3"]), saved, tmp_path) == []


WRITER = """
import sys, time, adpm_dist.files as files
files.os.replace = lambda a, b: (print("written", flush=True), time.sleep(120))  # killed before the rename
files.atomic_write_json(sys.argv[1], {"macro_f1": 0.5})
"""


def test_a_writer_killed_before_its_rename_leaves_the_old_file_and_a_leftover_that_is_removed(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text('{"macro_f1": 0.9}')
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "written"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert json.loads(target.read_text()) == {"macro_f1": 0.9}  # the good file was never replaced
    (leftover,) = [p for p in tmp_path.iterdir() if p != target]
    assert is_leftover(leftover) and json.loads(leftover.read_text()) == {"macro_f1": 0.5}
    assert remove_leftovers(tmp_path) == [leftover] and sorted(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("method", ["adpm", "ce"])
def test_the_engine_opens_the_evaluation_part_only_for_the_final_evaluation(method, digits_shards, tmp_path,
                                                                          monkeypatch):
    from adpm_dist.data import stream
    from adpm_dist.data.manifest import load_manifest
    from adpm_dist.runtime import engine

    eval_shards = {str(p) for p in load_manifest(digits_shards).parts["test"]}
    opened, evaluating = [], []
    read_shard, final_evaluation = stream.read_shard, engine.final_evaluation
    monkeypatch.setattr(stream, "read_shard", lambda path: opened.append((str(path), bool(evaluating)))
                        or read_shard(path))
    monkeypatch.setattr(engine, "final_evaluation", lambda *a, **k: evaluating.append(1) or final_evaluation(*a, **k))
    out = tmp_path / method
    out.mkdir()
    (out / ".metrics.json.tmp-12345").write_text("{")  # a killed writer's leftover
    cfg = load_config(TINY, [f"data.shards={digits_shards}", f"run.output_dir={out}", f"method={method}",
                             "train.epochs=1", "diffusion.test_timesteps=3"])
    metrics = engine.train(cfg)
    early = [path for path, late in opened if path in eval_shards and not late]
    assert not early, f"evaluation shards opened before the final evaluation: {early}"
    assert any(path in eval_shards for path, late in opened if late)
    assert not (out / ".metrics.json.tmp-12345").exists()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["config_fingerprint"] == config_fingerprint(cfg) and saved["code_version"] == code_version()
    assert ("prior_agreement" in saved) == (method == "adpm") and "selection" in saved
    assert metrics["macro_f1"] == saved["macro_f1"]


def test_quality_refuses_to_reuse_a_run_trained_with_other_settings(digits_shards, tmp_path, capsys):
    """A finished run whose saved config differs from what the command would run is named, never reused."""
    import importlib

    quality = importlib.import_module("benchmarks.quality")
    args = quality.parse_args(["--config", str(TINY), "--methods", "ce", "--seeds", "0", "--shards",
                               str(digits_shards)])
    data = {"digits": digits_shards}
    run_dir = tmp_path / "runs" / "digits" / "ce" / "seed0"
    trained = quality.resolved_config(args, ["train.lr=0.123", *quality.run_overrides(args, quality.METHODS, "ce")],
                                      quality.run_settings(digits_shards, run_dir, 0, None))
    save_config(trained, run_dir / "config.yaml")
    atomic_write_json(run_dir / "metrics.json", {"config_fingerprint": config_fingerprint(trained), "macro_f1": 1.0})
    with pytest.raises(SystemExit, match="seed0: train.lr"):
        quality.run_all(args, data, tmp_path)
