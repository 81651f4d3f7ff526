"""Fault suite, data (docs/faults.md): data.cache=host in /dev/shm. Its space is reserved before anything is
decoded into it, so a cache that does not fit (another run's cache took the room) is one line and nothing
is left in /dev/shm; a failed start leaves no config.yaml that blocks the retry with data.cache=none; a
cache file left by a killed run is reused and then removed, and a killed run's reservation is deleted."""
from __future__ import annotations

import errno
import os
import shutil
import sys
from pathlib import Path

import pytest

from process_group import run_session

from adpm_dist.config import ConfigError, load_config
from adpm_dist.data import cache
from adpm_dist.data.manifest import load_manifest

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "digits_lt_tiny.yaml"


@pytest.fixture
def own_shards(digits_shards, tmp_path) -> Path:
    """A copy: its own /dev/shm name, shared with no other test."""
    return Path(shutil.copytree(digits_shards, tmp_path / "shards"))


def shm_files(shards: Path) -> list[Path]:
    path = cache._shm_path(load_manifest(shards), 32)
    return [p for p in cache.SHM.glob(f"*{path.name}*")]


def test_a_cache_that_cannot_be_reserved_is_refused_before_anything_is_written(own_shards, tmp_path, monkeypatch):
    from accelerate import Accelerator

    from adpm_dist.runtime.engine import set_up

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    out = tmp_path / "run"
    cfg = load_config(TINY, [f"data.shards={own_shards}", f"run.output_dir={out}", "data.cache=host"])
    with pytest.raises(cache.CacheTooLarge, match=r"data.cache=host: cannot reserve 0.0\d GB in /dev/shm "
                                                  r"\(No space left on device; .* GB free there\); use data.cache=none"):
        set_up(cfg, Accelerator(cpu=True))
    assert shm_files(own_shards) == []  # no cache, no reservation, no .users file
    assert not (out / "config.yaml").exists()  # the retry with data.cache=none is not refused
    assert issubclass(cache.CacheTooLarge, ConfigError)  # launch/train.py: one line, exit 2


def test_a_killed_runs_cache_is_reused_then_removed_and_its_reservation_deleted(own_shards, tmp_path):
    fill = ("import os, signal, sys; from adpm_dist.data import cache; from adpm_dist.data.manifest import "
            "load_manifest; s = cache.host_cache(load_manifest(sys.argv[1]), 32); print(s.path, flush=True); "
            "sys.argv[2:] and os.kill(os.getpid(), signal.SIGKILL)")
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    killed = run_session([sys.executable, "-c", fill, str(own_shards), "kill"], capture_output=True, text=True,
                         env=env, timeout=300)
    path = Path(killed.stdout.split()[0])
    assert killed.returncode == -9 and path.exists()  # SIGKILL: nothing ran at exit
    dead = cache.SHM / f".{path.name}.999999"  # a reservation a killed run was making (pid 999999: gone)
    dead.write_bytes(b"x")
    reused = run_session([sys.executable, "-c", fill, str(own_shards)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert reused.returncode == 0, reused.stderr[-2000:]
    assert f"reusing {path}, left by a run that was killed" in reused.stdout
    assert not path.exists() and not dead.exists() and not cache.users_path(path).exists()
