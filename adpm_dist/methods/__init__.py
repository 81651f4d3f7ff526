"""Every method the harness trains, behind one interface (base.Method), registered by name.

``method=`` in the config picks one; the engine asks the method object for its epoch plan, losses,
predictions and model, and never compares names. Adding a method: one file with a ``Method``
subclass (with its default ``search_space``), plus its line in ``_register`` below (docs/baselines.md,
"Adding a method"). ``search_space(name)`` returns a method's space, checked against the Config.

adpm.py: ADPM (docs/algorithm.md) and its adjusted chain; classifiers.py: the long-tail classifier baselines; prior.py:
ADPM's prior network alone; losses.py: the baselines' losses as pure functions.
"""
from __future__ import annotations

from torch import nn

from ..config import Config
from .adpm import ADPMAdjustedChain
from .base import EpochPlan, Method
from .classifiers import CLASSIFIERS, ClassifierModel
from .decoupled import DECOUPLED
from .margins import MARGINS
from .mislas import MiSLAS
from .posthoc import ADPMWithPriorReadout, PosthocLogitAdjustment
from .prior import PriorAlone
from .space import checked_space

REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if cls.name in REGISTRY:
        raise ValueError(f"method {cls.name!r} registered twice ({REGISTRY[cls.name].__name__}, {cls.__name__})")
    REGISTRY[cls.name] = cls
    return cls


def _register() -> None:
    # a new method: add its class here. ADPMWithPriorReadout is adpm.py's ADPMMethod + model.prior_readout.
    for cls in (ADPMWithPriorReadout, ADPMAdjustedChain, PriorAlone, *CLASSIFIERS, *DECOUPLED, PosthocLogitAdjustment, *MARGINS, MiSLAS):
        register(cls)


_register()


def method_class(name: str) -> type[Method]:
    if name not in REGISTRY:
        raise KeyError(f"method: {name!r} is not one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def search_space(name: str) -> dict[str, list]:
    """A copy of method ``name``'s default search space (dotted config key -> candidate values), every
    key and value checked against the Config (space.py); {} = nothing to tune."""
    return checked_space(name, method_class(name).search_space)


def method_for(cfg: Config) -> Method:
    """The method object of ``cfg.method``."""
    return method_class(cfg.method)(cfg)


def build_model(cfg: Config, class_counts: list[int]) -> nn.Module:
    """The model of ``cfg.method`` for a training set with these per-class counts."""
    return method_for(cfg).build(class_counts)


__all__ = ["REGISTRY", "Method", "EpochPlan", "ClassifierModel", "register", "method_class", "method_for",
           "build_model", "search_space"]
