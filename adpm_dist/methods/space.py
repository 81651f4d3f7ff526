"""A method's default search space, checked against the Config (docs/baselines.md, "Search spaces").

Each method class declares ``search_space`` next to itself (base.Method); ``search_space(name)``
returns a copy after checking that every key is a config key and that every value passes the
config's own conversion and range checks when set on a config of that method, so a typo or an
out-of-range value in a declared space fails here, with the method, the key and the value named,
not in the middle of a study.
"""
from __future__ import annotations

import copy
import dataclasses

from ..config import Config, ConfigError, set_key, validate


def is_config_key(dotted: str) -> bool:
    """Whether ``dotted`` (``baseline.la_tau``) names a leaf of the Config tree."""
    node: object = Config()
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(node) or part not in {f.name for f in dataclasses.fields(node)}:
            return False
        node = getattr(node, part)
    return not dataclasses.is_dataclass(node)


def checked_space(name: str, space: dict[str, list]) -> dict[str, list]:
    """A copy of ``space`` for method ``name``; ConfigError names the first bad key or value."""
    out = {}
    for key, values in space.items():
        if not is_config_key(key):
            raise ConfigError(f"method {name}: search space key {key!r} is not a config key")
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"method {name}: search space {key}: expected a non-empty list, got {values!r}")
        for value in values:
            cfg = Config(method=name)
            try:
                set_key(cfg, key, value)
                validate(cfg)
            except ConfigError as e:
                raise ConfigError(f"method {name}: search space {key}={value!r}: {e}") from None
        out[key] = copy.deepcopy(list(values))
    return out
