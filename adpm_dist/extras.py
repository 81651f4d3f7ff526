"""Optional dependencies: what needs an extra of ``pip install adpm-dist[...]`` says so in one line.

DeepSpeed (``[distributed]``) and Ray Tune (``[tune]``) are heavy and a single-GPU user needs
neither; ``[dev]`` pulls both (``make setup`` installs it, so ``make test`` runs everything).
"""
from __future__ import annotations

import importlib.util

EXTRAS = {"deepspeed": "distributed", "ray": "tune", "psutil": "tune"}


class MissingExtra(ImportError):
    pass


def require(module: str, needed_for: str) -> None:
    """Raise MissingExtra naming the extra to install when ``module`` is not importable."""
    if importlib.util.find_spec(module) is None:
        extra = EXTRAS[module]
        raise MissingExtra(f"{needed_for} needs {module}, which is not installed: "
                           f"pip install 'adpm-dist[{extra}]' (or pip install -e '.[{extra}]' in a checkout)")
