"""Fault suite, runs and outputs (docs/faults.md): hostile config values are refused naming key and value,
and an override value is never cut at ' #'."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from adpm_dist.config import ConfigError, load_config, save_config

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "digits_lt_tiny.yaml"

HOSTILE = [
    ("train.lr=.inf", "train.lr"), ("train.lr=.nan", "train.lr"), ("noise.beta=.inf", "noise.beta"),
    ("noise.alpha=.nan", "noise.alpha"), ("data.num_workers=-3", "data.num_workers"),
    ("train.warmup_epochs=-2", "train.warmup_epochs"), ("data.rotation=.nan", "data.rotation"),
    ("data.rotation=-1", "data.rotation"), ("diffusion.mmd_weight=-5", "diffusion.mmd_weight"),
    ("noise.n_floor=-4", "noise.n_floor"), ("train.resume_changes=train.lrr", "train.resume_changes"),
    ("train.prior_lr=0", "train.prior_lr"), ("train.log_every=0", "train.log_every"),
    ("run.seed=-1", "run.seed"), ("baseline.readout_tau_grid=[0, .inf]", "baseline.readout_tau_grid"),
    ("train.lr=0.1 # comment", "train.lr"), ("run.output_dir=*alias", "run.output_dir"),
    ("train.epochs=.inf", "train.epochs"),
]


@pytest.mark.parametrize("override,key", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_value_is_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(TINY, [override])


@pytest.mark.parametrize("value", ["runs/victim #2", "/p #x", "#start", "a #b #c"])
def test_override_keeps_a_hash_verbatim_and_config_yaml_round_trips(value, tmp_path):
    cfg = load_config(TINY, [f"run.output_dir={value}", f"data.shards={value}"])
    assert cfg.run.output_dir == value and cfg.data.shards == value
    save_config(cfg, tmp_path / "c.yaml")
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["run"]["output_dir"] == value
    assert load_config(tmp_path / "c.yaml").run.output_dir == value


def test_resume_changes_accepts_real_keys():
    cfg = load_config(TINY, ["train.resume_changes=train.epochs,data.shards"])
    assert cfg.train.resume_changes == ["train.epochs", "data.shards"]
