"""Every registered method's default search space (base.Method.search_space, docs/baselines.md):
keys that exist, values the config accepts through its override path, small grids, copies."""
from __future__ import annotations

import math

import pytest

from adpm_dist.config import Config, ConfigError, flatten, load_config, to_dict
from adpm_dist.methods import REGISTRY, search_space
from adpm_dist.methods.base import Method
from adpm_dist.methods.space import checked_space, is_config_key

TUNED = ("focal", "logit_adjusted", "ldam_drw", "vs", "gcl", "mislas", "adpm", "adpm_adjusted_chain")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_value_goes_through_the_override_path(name):
    space = search_space(name)
    points = math.prod(len(v) for v in space.values()) if space else 0
    assert points <= 6, f"{name}: {points} grid points"
    for key, values in space.items():
        assert 2 <= len(values) <= 4, (name, key, values)
        assert len(set(values)) == len(values), (name, key, values)
        for value in values:  # as a study passes it: key=value text, YAML-parsed, converted, validated
            cfg = load_config(None, [f"method={name}", f"{key}={value!r}"])
            assert flatten(to_dict(cfg))[key] == pytest.approx(value)


def test_the_tuned_methods_declare_spaces_and_the_others_none():
    assert set(TUNED) <= set(REGISTRY)
    for name in REGISTRY:
        assert bool(search_space(name)) == (name in TUNED), name
    assert search_space("logit_adjusted") == {"baseline.la_tau": [0.5, 1.0, 1.5, 2.0]}
    assert 1.0 in search_space("adpm_adjusted_chain")["model.chain_tau"]


def test_search_space_is_a_copy():
    space = search_space("focal")
    space["baseline.focal_gamma"].append(99.0)
    space["baseline.nope"] = [1]
    assert search_space("focal") == {"baseline.focal_gamma": [0.5, 1.0, 2.0, 5.0]}


def test_a_typo_or_an_out_of_range_value_fails_naming_method_key_and_value():
    assert is_config_key("baseline.la_tau") and is_config_key("noise.alpha")
    assert not is_config_key("baseline") and not is_config_key("baseline.la_tua") and not is_config_key("x.y.z")
    with pytest.raises(ConfigError, match=r"method focal: search space key 'baseline.focal_gama' is not a config key"):
        checked_space("focal", {"baseline.focal_gama": [1.0]})
    with pytest.raises(ConfigError, match=r"method focal: search space baseline.focal_gamma=-1.0: .*focal_gamma"):
        checked_space("focal", {"baseline.focal_gamma": [1.0, -1.0]})
    with pytest.raises(ConfigError, match=r"non-empty list"):
        checked_space("focal", {"baseline.focal_gamma": []})
    with pytest.raises(KeyError, match="nope"):
        search_space("nope")


def test_the_default_is_empty_and_the_config_default_is_a_point_where_the_paper_default_is():
    assert Method.search_space == {}
    defaults = flatten(to_dict(Config()))
    for name in TUNED:  # each space contains the value the method runs with by default (its paper's)
        for key, values in search_space(name).items():
            assert any(math.isclose(defaults[key], v) for v in values), (name, key, defaults[key], values)
