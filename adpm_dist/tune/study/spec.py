"""What a study compares: candidates, each a method + fixed settings + its own search space.

A candidate is named on the command line (``--methods ce,logit_adjusted,adpm_isotropic``): a registered
method (its class's ``search_space``, a grid: dotted key -> candidate values, declared next to the
method) or a preset below (a method with fixed settings, e.g. isotropic ADPM = adpm with
noise.alpha = 0). ``--space FILE.yaml`` replaces the spaces of the candidates it names::

    logit_adjusted: {loss.tau: [0.5, 1.0, 2.0]}
    adpm: {noise.alpha: [0.1667, 0.5], noise.beta: [1, 5]}

Spaces are conditional by construction: each candidate's points are the product of its own keys only,
so a key that exists for one method never multiplies another method's trials.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ...config import ConfigError

# Candidates that are a registered method with fixed settings: name -> (method, fixed settings, space).
PRESETS: dict[str, tuple[str, dict, dict]] = {
    "adpm_isotropic": ("adpm", {"noise.alpha": 0.0}, {}),  # lambda_j = 1: DiffMIC's noise; beta has no effect
}


@dataclass(frozen=True)
class Point:
    """One setting of a candidate's space: dotted key -> value, and a short file-system-safe label."""
    settings: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        if not self.settings:
            return "default"
        parts = [f"{key.rsplit('.', 1)[-1]}{_value_label(v)}" for key, v in self.settings.items()]
        return re.sub(r"[^A-Za-z0-9_.+-]", "-", "_".join(parts))

    @property
    def title(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings.items()) or "default settings"


def isotropic(alpha: float) -> bool:
    """alpha = 0 gives lambda_j = 1 for every class and every beta (eq. 14, all formulas): plain DiffMIC."""
    return alpha == 0


def no_effect(settings: dict) -> set[str]:
    """Keys whose value changes nothing at `settings`: noise.beta when noise.alpha = 0 (eq. 14 gives
    lambda_j = 1 for every beta, `isotropic`). Candidate.points() trains one point for all of them (the
    first beta), in a study as in the noise grid, its `adpm` preset (../grid.py)."""
    alpha = settings.get("noise.alpha")
    return {"noise.beta"} if alpha is not None and isotropic(float(alpha)) else set()


def _value_label(v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return f"{v:g}"


@dataclass
class Candidate:
    name: str
    method: str
    fixed: dict = field(default_factory=dict)
    space: dict[str, list] = field(default_factory=dict)

    def points(self) -> list[Point]:
        """The grid of this candidate's own keys, in the space's order (one point, `default`, if empty), less
        the points that train what an earlier point trains (`no_effect`: isotropic noise ignores beta)."""
        keys = list(self.space)
        points, seen = [], set()
        for values in itertools.product(*(self.space[k] for k in keys)):
            point = Point(dict(zip(keys, values)))
            settings = self.fixed | point.settings
            trained = tuple(sorted((k, repr(v)) for k, v in settings.items() if k not in no_effect(settings)))
            if trained not in seen:
                seen.add(trained)
                points.append(point)
        return points

    def settings(self, point: Point) -> dict:
        return {"method": self.method} | self.fixed | point.settings

    def to_dict(self) -> dict:
        return {"name": self.name, "method": self.method, "fixed": self.fixed, "space": self.space,
                "points": [{"label": p.label, "settings": p.settings} for p in self.points()]}


def method_space(method: str) -> dict[str, list]:
    """The method's declared default space (a class attribute next to the method; {} = nothing to tune),
    checked against the config: a bad key or value is named here, not in the middle of a study."""
    from ...methods import search_space

    return search_space(method)


def registered_methods() -> list[str]:
    from ...methods import REGISTRY

    return list(REGISTRY)


def build_candidates(names: list[str] | None, space_file: str | None = None) -> list[Candidate]:
    """--methods (default: every registered method) with their spaces, --space overriding; ConfigError on
    an unknown name, a bad file, or a space entry for a candidate that is not in the study."""
    from ...methods import method_class

    names = names or registered_methods()
    if len(set(names)) != len(names):
        raise ConfigError(f"--methods names a candidate twice: {names}")
    overrides = load_space(space_file) if space_file else {}
    extra = sorted(set(overrides) - set(names))
    if extra:
        raise ConfigError(f"--space {space_file}: {extra} are not among --methods {names}")
    out = []
    for name in names:
        if name in PRESETS:
            method, fixed, space = PRESETS[name]
        else:
            try:
                method_class(name)
            except KeyError as e:
                raise ConfigError(f"--methods: {name!r} is neither a registered method nor a preset "
                                  f"({', '.join(PRESETS)}): {e.args[0]}") from None
            method, fixed, space = name, {}, method_space(name)
        space = overrides.get(name, space)
        clash = sorted(set(space) & (set(fixed) | {"method"}))
        if clash:
            raise ConfigError(f"candidate {name}: {clash} are fixed by the candidate and cannot be searched")
        out.append(Candidate(name, method, dict(fixed), {k: list(v) for k, v in space.items()}))
    return out


def load_space(path: str) -> dict[str, dict[str, list]]:
    """FILE.yaml: candidate -> {dotted key: [values]}; one line naming the file and entry on bad input."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--space {path}: no such file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"--space {path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--space {path}: expected a mapping candidate -> {{key: [values]}}")
    for name, space in data.items():
        if space is None:
            data[name] = space = {}
        if not isinstance(space, dict):
            raise ConfigError(f"--space {path}: {name}: expected a mapping key -> [values], got {space!r}")
        for key, values in space.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"--space {path}: {name}.{key}: expected a non-empty list of values, got {values!r}")
    return data
