from pathlib import Path

import pytest

from adpm_dist.config import ConfigError, from_dict, load_config, save_config, to_dict

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_and_yaml_and_overrides():
    cfg = load_config(ROOT / "configs/digits_lt.yaml", ["train.epochs=2", "noise.alpha=1/4", "data.train_parts=fold0,fold1"])
    assert cfg.train.epochs == 2 and cfg.noise.alpha == 0.25
    assert cfg.data.train_parts == ["fold0", "fold1"]
    assert cfg.data.image_size == 32


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="train.epoch'"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="unknown config key 'nosuch'"):
        load_config(None, ["nosuch.x=1"])


def test_invalid_values_are_named(tmp_path):
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config(None, ["train.batch_size=abc"])
    with pytest.raises(ConfigError, match="noise.formula"):
        load_config(None, ["noise.formula=Z"])
    with pytest.raises(ConfigError, match="diffusion.test_timesteps"):
        load_config(None, ["diffusion.test_timesteps=5000"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*train.lrr"):
        load_config(bad)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.lr"])


def test_round_trip(tmp_path):
    cfg = load_config(ROOT / "configs/digits_lt.yaml", ["run.seed=7"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert to_dict(again) == to_dict(cfg) == to_dict(from_dict(to_dict(cfg)))
