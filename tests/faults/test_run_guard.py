"""Fault suite, runs and outputs, round two (docs/faults.md): a finished run is never replaced by
train.resume=auto, one run at a time holds a run directory (run.lock, a killed holder's lock taken over),
a failed start-up leaves nothing that blocks the corrected rerun, and hostile settings (an empty
run.output_dir, a 70-bit seed, YAML tags, a misspelt backbone, a tracker without its package) are one
line, exit 2."""
from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest

import torch
from process_group import run_session
from test_pretrained import hub_cache  # noqa: F401 (a fixture)

from adpm_dist.config import ConfigError, load_config, save_config, to_dict
from adpm_dist.runtime.checkpoint import STATE_FILE
from adpm_dist.runtime.rundir import check_run
from adpm_dist.runtime.runlock import LOCK_FILE, RunLocked, acquire

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "digits_lt_tiny.yaml"


def tiny(shards: Path, out: Path, *overrides: str):
    return load_config(TINY, [f"data.shards={shards}", f"run.output_dir={out}", *overrides])


def finished_run(out: Path, cfg) -> dict[str, bytes]:
    """What a run with train.checkpoint_every_epochs=0 leaves: results and best.pt, no step checkpoint."""
    (out / "checkpoints").mkdir(parents=True)
    save_config(cfg, out / "config.yaml")
    (out / "metrics.json").write_text('{"macro_f1": 0.5}\n')
    (out / "checkpoints" / "best.pt").write_bytes(b"weights")
    return {p.name: p.read_bytes() for p in (out / "config.yaml", out / "metrics.json", out / "checkpoints" / "best.pt")}


def test_resume_auto_never_replaces_a_finished_run(digits_shards, tmp_path):
    out = tmp_path / "run"
    before = finished_run(out, tiny(digits_shards, out))
    other = tiny(digits_shards, out, "train.resume=auto", "train.lr=0.01", "model.hidden_dim=32")
    with pytest.raises(ConfigError, match=r"train.resume=auto: .* holds a finished run \(config.yaml, metrics.json, "
                                          r"checkpoints/\) and no step checkpoint.*another run.output_dir.*"
                                          r"run.overwrite=true"):
        check_run(other, 1)
    with pytest.raises(ConfigError, match="holds a finished run"):  # the same config is refused too: no checkpoint
        check_run(tiny(digits_shards, out, "train.resume=auto"), 1)
    assert {p: (out / ("checkpoints/" if p == "best.pt" else "") / p).read_bytes() for p in before} == before
    assert check_run(tiny(digits_shards, out, "train.resume=auto", "run.overwrite=true"), 1).resume_from is None


def test_resume_auto_continues_a_finished_trial_from_its_checkpoint(digits_shards, tmp_path):
    """A study's retried trial that had finished: its last step checkpoint is continued (same config), as before."""
    out = tmp_path / "run"
    cfg = tiny(digits_shards, out, "train.resume=auto")
    finished_run(out, cfg)
    step = out / "checkpoints" / "step_00000026"
    step.mkdir()
    (step / STATE_FILE).write_text(json.dumps({"step": 26, "world_size": 1, "config": to_dict(cfg)}))
    assert check_run(cfg, 1).resume_from == step


def test_resume_auto_over_another_configs_unfinished_run_is_refused(digits_shards, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    save_config(tiny(digits_shards, out), out / "config.yaml")  # killed before its first checkpoint
    with pytest.raises(ConfigError, match=r"another config \(config.yaml differs in train.lr\)"):
        check_run(tiny(digits_shards, out, "train.resume=auto", "train.lr=0.01"), 1)
    assert check_run(tiny(digits_shards, out, "train.resume=auto"), 1).resume_from is None  # a retried trial


def test_a_second_run_into_a_locked_directory_is_refused_naming_the_first(tmp_path):
    first = acquire(tmp_path)
    with pytest.raises(RunLocked, match=rf"in use by another run \(pid {os.getpid()} on host "
                                        rf"{socket.gethostname()}.*choose another run.output_dir"):
        acquire(tmp_path)  # an flock is per open file: a second open in this process conflicts like another run
    first.release()
    assert not (tmp_path / LOCK_FILE).exists()
    acquire(tmp_path).release()


def test_a_killed_runs_lock_is_taken_over(tmp_path):
    stale = {"host": socket.gethostname(), "pid": 999999, "started": "2026-01-01 00:00:00"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(stale))  # the text of a run killed with SIGKILL: no flock held
    lock = acquire(tmp_path)
    assert lock.took_over == stale
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_a_failed_start_leaves_nothing_that_blocks_the_rerun(digits_shards, tmp_path, monkeypatch):
    from accelerate import Accelerator

    from adpm_dist.runtime import engine

    def broken(run):
        raise ValueError("weights do not fit")

    out = tmp_path / "run"
    monkeypatch.setattr(engine, "build_model_and_optimizer", broken)
    with pytest.raises(ValueError, match="weights do not fit"):
        engine.set_up(tiny(digits_shards, out), Accelerator(cpu=True))
    assert not (out / "config.yaml").exists() and not (out / LOCK_FILE).exists()
    assert check_run(tiny(digits_shards, out), 1).resume_from is None  # the corrected rerun is not refused


HOSTILE = [("run.output_dir=", "run.output_dir: invalid value ''"),
           ("run.output_dir=' '", "run.output_dir: invalid value ' '"),
           ("run.seed=1180591620717411303424", "run.seed: invalid value 1180591620717411303424"),
           ("train.lr=!!python/name:os.system", "train.lr: cannot read .* \\(could not determine a constructor"),
           ("model.backbone=resnet1", "model.backbone: 'resnet1' is not a timm model; did you mean resnet18"),
           ("model.encoder=resnt18", "model.encoder: 'resnt18' is not a timm model; did you mean resnet18")]


@pytest.mark.parametrize("override,message", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_setting_is_one_line(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, [override])


def test_a_config_with_a_yaml_tag_is_refused_without_constructing_it(tmp_path):
    bad = tmp_path / "tagged.yaml"
    bad.write_text(f"train: !!python/object/apply:os.system ['touch {tmp_path}/ran']\n")
    with pytest.raises(ConfigError, match=r"tagged.yaml: not a plain YAML config \(could not determine a "
                                          r"constructor.*line 1, column 8\)"):
        load_config(bad)
    assert not (tmp_path / "ran").exists()


def test_a_tracker_without_its_package_is_refused_naming_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"train.log_with: wandb needs the wandb package.*adpm-dist\[tracking\]"):
        load_config(TINY, ["train.log_with=[wandb]"])


def test_cli_refuses_an_empty_output_dir_in_one_line(digits_shards, tmp_path):
    cmd = [sys.executable, str(ROOT / "launch" / "train.py"), "--config", str(TINY), f"data.shards={digits_shards}",
           "run.output_dir="]
    done = run_session(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == "config error: run.output_dir: invalid value ''"
    assert list(tmp_path.iterdir()) == []  # nothing written where it was launched


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"),
                                     RuntimeError("basic_ios::clear: iostream error")], ids=["oserror", "torch"])
def test_a_full_disk_names_the_checkpoint_and_leaves_no_partial_one(failure, tmp_path, monkeypatch):
    import shutil

    import torch
    from accelerate import Accelerator

    from adpm_dist.runtime import checkpoint

    def full(*args, **kwargs):
        raise failure

    monkeypatch.setattr(torch, "save", full)
    if isinstance(failure, RuntimeError):  # torch's C++ writer drops errno: the free space says why
        monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 0))
    root = tmp_path / "checkpoints"
    with pytest.raises(OSError, match=r"cannot write the checkpoint .*\.tmp-step_00000004 \(ENOSPC: No space left"):
        checkpoint.save_training_state(Accelerator(cpu=True), root, {"step": 4}, {"gen": 1}, None, keep=2)
    assert list(root.iterdir()) == []  # no .tmp-step_* keeping the disk full


def test_a_full_disk_in_an_atomic_write_names_the_file(tmp_path, monkeypatch):
    from adpm_dist.files import atomic_write_json

    target = tmp_path / "metrics.json"
    real_fsync = os.fsync

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=rf"cannot write {target} \(ENOSPC: No space left on device\)"):
        atomic_write_json(target, {"a": 1})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert list(tmp_path.iterdir()) == []


def test_data_verify_names_a_changed_shard_in_one_line(digits_shards, tmp_path):
    import shutil

    from accelerate import Accelerator

    from adpm_dist.data.manifest import load_manifest
    from adpm_dist.runtime.engine import set_up

    shards = Path(shutil.copytree(digits_shards, tmp_path / "shards"))
    first, second = load_manifest(shards).parts["train"][:2]
    shutil.copyfile(first, second)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=rf"data.verify: {second}: sha256 does not match"):
        set_up(tiny(shards, out, "data.verify=true"), Accelerator(cpu=True))
    assert not (out / "config.yaml").exists()


def test_hub_weights_not_in_the_cache_are_refused_at_once_offline_or_unreachable(hub_cache, monkeypatch):
    import time

    import huggingface_hub.constants as constants

    from adpm_dist.models.backbone import FeatureMap, WeightsUnavailable

    start = time.monotonic()
    with pytest.raises(WeightsUnavailable, match=r"'hf-hub:timm/test_resnet.other' \(timm/test_resnet.other\) are "
                                                 r"not in the hub cache .* and HF_HUB_OFFLINE is set"):
        FeatureMap("test_resnet", 2, "hf-hub:timm/test_resnet.other")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online as far as the settings go, but the hub cannot be reached
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    with pytest.raises(WeightsUnavailable, match=r"not in the hub cache .* and http://127.0.0.1:9 cannot be reached"):
        FeatureMap("test_resnet", 2, "hf-hub:timm/test_resnet.other")
    assert time.monotonic() - start < 10  # no minute of HTTP retries
    fm = FeatureMap("test_resnet", 2, "true")  # cached weights: read from the cache file, no request at all
    assert torch.equal(fm.net.conv1[0].weight, hub_cache.conv1[0].weight)


def test_cli_offline_pretrained_is_one_line(digits_shards, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "launch" / "train.py"), "--config", str(TINY), f"data.shards={digits_shards}",
           f"run.output_dir={out}", "model.pretrained=true"]
    env = os.environ | {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1",
                        "PYTHONPATH": str(ROOT)}
    done = run_session(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().startswith("config error: pretrained weights 'True' (timm/test_resnet.r160_in1k) are "
                                          "not in the hub cache") and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (out / "config.yaml").exists()  # the run with the weights in the cache is not refused


def test_a_forked_child_does_not_keep_the_lock_of_a_killed_run(tmp_path):
    """A DataLoader worker forked by a run that is then SIGKILLed must not hold run.lock for the retry."""
    import contextlib
    import signal
    import time

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the run: takes the lock, forks a long-lived "worker", reports, waits to be killed
        acquire(tmp_path)
        child = os.fork()
        if child == 0:
            time.sleep(30)
            os._exit(0)
        os.write(w, f"{child:>10}".encode())
        time.sleep(30)
        os._exit(0)
    worker = None
    try:
        worker = int(os.read(r, 10))
        with pytest.raises(RunLocked):
            acquire(tmp_path)  # the run is alive: refused
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        lock = acquire(tmp_path)  # its forked child is still alive, yet the lock is free
        assert lock.took_over["pid"] == pid
        lock.release()
    finally:
        for p in (pid, worker):
            if p is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
        os.close(r)
        os.close(w)


def test_cli_full_disk_is_one_line_naming_the_path(digits_shards, tmp_path, monkeypatch, capsys):
    import importlib.util

    from adpm_dist.runtime.checkpoint import write_error

    spec = importlib.util.spec_from_file_location("train_cli", ROOT / "launch" / "train.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    partial = tmp_path / "run" / "checkpoints" / ".tmp-step_00000004"

    def full(cfg, acc, stop=None):
        raise write_error(partial, OSError(28, "No space left on device"))

    monkeypatch.setattr(cli, "train", full)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    rc = cli.main(["--config", str(TINY), f"data.shards={digits_shards}", f"run.output_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: cannot write the checkpoint {partial} (ENOSPC: No space left on device")
