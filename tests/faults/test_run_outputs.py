"""Fault suite, runs and outputs (docs/faults.md): what is refused before run.output_dir is touched
(missing data, bad eval part, bad resume, resume on other data, a fresh run over an earlier one),
run.overwrite's clean start, and writers that keep the previous good file when killed mid-write."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from process_group import run_session

from adpm_dist.config import ConfigError, load_config, to_dict
from adpm_dist.data.manifest import load_manifest
from adpm_dist.files import atomic_torch_save, atomic_writer, atomic_write_json
from adpm_dist.runtime.checkpoint import STATE_FILE
from adpm_dist.runtime.record import data_identity
from adpm_dist.runtime.rundir import check_run, start_clean

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "digits_lt_tiny.yaml"


def tiny(shards: Path, out: Path, *overrides: str):
    return load_config(TINY, [f"data.shards={shards}", f"run.output_dir={out}", *overrides])


def fake_checkpoint(out: Path, cfg, data: dict, step: int = 3) -> Path:
    """A complete-looking step checkpoint: trainer_state.json is all that the checks before a run read."""
    path = out / "checkpoints" / f"step_{step:08d}"
    path.mkdir(parents=True)
    (path / STATE_FILE).write_text(json.dumps({"step": step, "world_size": 1, "config": to_dict(cfg), "data": data}))
    (out / "config.yaml").write_text("{}\n")
    return path


@pytest.mark.parametrize("override,named", [("data.shards={tmp}/nowhere", "data.shards"),
                                            ("data.eval_part=fold9", "data.eval_part"),
                                            ("train.resume={tmp}/no_checkpoint", "train.resume")])
def test_refused_before_anything_is_created(override, named, digits_shards, tmp_path):
    out = tmp_path / "run"
    cfg = tiny(digits_shards, out, override.format(tmp=tmp_path))
    with pytest.raises(ConfigError, match=named):
        check_run(cfg, 1)
    assert not out.exists()


def test_fresh_run_over_an_earlier_run_is_refused_and_overwrite_starts_clean(digits_shards, tmp_path):
    out = tmp_path / "run"
    cfg = tiny(digits_shards, out)
    fake_checkpoint(out, cfg, {})
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "events.out.tfevents.1").write_bytes(b"old")
    (out / "train.log").write_text("a launcher's log")
    with pytest.raises(ConfigError, match=r"run.output_dir: .* holds an earlier run \(config.yaml, checkpoints/, "
                                          r"tensorboard/\).*run.overwrite=true"):
        check_run(cfg, 1)
    assert check_run(tiny(digits_shards, out, "run.overwrite=true"), 1).resume_from is None
    assert start_clean(out) == ["config.yaml", "checkpoints/", "tensorboard/"]
    assert [p.name for p in out.iterdir()] == ["train.log"]  # not ours: left alone


def test_resume_on_other_data_is_refused_naming_the_part(digits_shards, fold_only_shards, tmp_path):
    out = tmp_path / "run"
    cfg = tiny(digits_shards, out, "train.resume=auto")
    other = load_manifest(fold_only_shards)
    ckpt = fake_checkpoint(out, cfg, data_identity(other.shards, other.dataset))
    with pytest.raises(ConfigError, match=r"train.resume: the data .* differ .*part 'test' added.*"
                                          r"train.resume_changes=data.shards"):
        check_run(cfg, 1)
    allowed = tiny(digits_shards, out, "train.resume=auto", "train.resume_changes=data.shards")
    assert check_run(allowed, 1).resume_from == ckpt
    same = load_manifest(digits_shards)
    (ckpt / STATE_FILE).write_text(json.dumps({"step": 3, "world_size": 1, "config": to_dict(cfg),
                                               "data": data_identity(same.shards, same.dataset)}))
    assert check_run(cfg, 1).resume_from == ckpt
    with pytest.raises(ConfigError, match="written by 1 processes, this run has 2"):
        check_run(cfg, 2)


def test_cli_refusal_is_one_line_exit_2_nothing_created(digits_shards, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "launch" / "train.py"), "--config", str(TINY), f"data.shards={tmp_path}/none",
           f"run.output_dir={out}"]
    done = run_session(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().startswith("config error: data.shards:") and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not out.exists()


class Killed(BaseException):
    """Stands for SIGKILL inside a writer: nothing after it runs (BaseException: no except Exception catches it)."""


@pytest.mark.parametrize("writer", ["text", "torch"])
def test_writer_killed_mid_write_keeps_the_previous_file(writer, tmp_path):
    path = tmp_path / f"target.{writer}"
    atomic_write_json(path, {"good": 1})
    before = path.read_bytes()

    class Exploding:
        def __reduce__(self):
            raise Killed

    with pytest.raises(Killed):
        if writer == "torch":  # best.pt
            atomic_torch_save({"w": torch.zeros(3), "x": Exploding()}, path)
        else:  # metrics.json, config.yaml, summary.csv, the predict CSV: all through atomic_writer
            _partial_text(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left either


def _partial_text(path: Path) -> None:
    with atomic_writer(path, newline="") as f:
        f.write("half a row,")
        raise Killed


def test_extending_a_finished_run_is_refused_before_anything_is_written(digits_shards, tmp_path):
    out = tmp_path / "run"
    same = load_manifest(digits_shards)
    fake_checkpoint(out, tiny(digits_shards, out), data_identity(same.shards, same.dataset))
    before = (out / "config.yaml").read_bytes()
    with pytest.raises(ConfigError, match="train.epochs.*train.resume_changes=train.epochs"):
        check_run(tiny(digits_shards, out, "train.resume=auto", "train.epochs=9"), 1)
    assert (out / "config.yaml").read_bytes() == before
