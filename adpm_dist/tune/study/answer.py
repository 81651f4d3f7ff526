"""A study's answer in one object: estimates, decisions, the recommendation, and what a reader must be
warned about (near chance, under-trained, too small to separate its top candidates, a recipe that will
train on far more images than each CV run did)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...runtime.selection import still_rising
from . import compare
from .results import Estimate

NEAR_CHANCE = 0.1  # an estimate within this share of the way from chance to a perfect 1 is "near chance"
# Below this share of the recipe's images per CV run, say that the interval is of a model trained on less: on
# the calibration's small sets (3 folds less a 15% carve-out: ~57%) recipes scored 1-14 points above their own
# CV models (docs/tune.md, "Calibration").
DATA_SHARE = 0.8


@dataclass
class Answer:
    search: dict
    estimates: list[Estimate]
    decisions: dict[str, compare.Decision]
    lead: Estimate | None
    rec: Estimate | None
    prior: np.ndarray
    target: str
    eps: float
    class_names: list[str]
    raced: dict = field(default_factory=dict)   # --race: candidate -> the drop's evidence (race.py)
    curves: list = field(default_factory=list)  # --learning-curve: curve.Curve per candidate

    @property
    def chance(self) -> float:
        """macro-F1 of a uniform random guess on a test set of any mix with every class: 1/K (recall and,
        under a balanced target, precision are 1/K for every class)."""
        return 1.0 / max(len(self.class_names), 1)

    def target_text(self) -> str:
        if self.target in ("balanced", "train"):
            return self.target
        return f"{self.target} (" + ", ".join(f"{c} {w:.3f}" for c, w in zip(self.class_names, self.prior)) + ")"

    def ranked(self) -> list[Estimate]:
        def key(e):
            v = self.decisions[e.name].estimate
            return -(v if not math.isnan(v) else -1.0)
        return sorted(self.estimates, key=key)

    def chose_a_point(self, e: Estimate) -> bool:
        """A point was chosen on the folds the estimate is scored on (held-out protocol, several points)."""
        return self.search["protocol"] != "nested" and len(e.selections[None].scores) > 1

    def near_chance(self, e: Estimate) -> bool:
        v = self.decisions[e.name].estimate
        return not math.isnan(v) and v <= self.chance + NEAR_CHANCE * (1 - self.chance)

    def under_trained(self, e: Estimate) -> bool:
        """Most of the recipe point's trials were still improving at their last validation (selection.still_rising
        on their validation history)."""
        rising = [still_rising((m.get("selection") or {}).get("history") or []) for m in e.recipe_runs]
        return bool(rising) and sum(rising) * 2 > len(rising)

    def warnings(self) -> list[str]:
        ready = [e for e in self.estimates if not math.isnan(self.decisions[e.name].estimate)]
        out = []
        near = [e.name for e in ready if self.near_chance(e)]
        if ready and len(near) == len(ready):
            out.append(f"every candidate is near chance (chance level {self.chance:.3f}): the study cannot tell the "
                       "methods apart; check the data, the labels and the training length")
        elif near:
            out.append(f"near chance (level {self.chance:.3f}): {', '.join(near)}")
        under = {e.name: length_key_of(e) for e in ready if self.under_trained(e)}
        if under:
            keys = sorted(set(under.values()))
            out.append(f"under-trained: {', '.join(under)} still improved at their last validation in "
                       f"most trials; more epochs ({' or '.join(keys)}) may change the order"
                       + ("" if len(keys) == 1 else " (" + "; ".join(f"{n}: {k}" for n, k in under.items()) + ")"))
        out += self.too_small()
        out += self.less_data()
        return out

    def less_data(self) -> list[str]:
        """The recommendation's CV runs trained on much less than its recipe will: the interval is of such a run."""
        share = data_share(self.rec) if self.rec is not None else math.nan
        if not share < DATA_SHARE:
            return []
        return [f"each CV run of {self.rec.name} trained on {share:.0%} of the images its recipe trains on (all "
                "folds, no validation carve-out); the interval is of such a run, and on a set still gaining from "
                "data the recipe will likely score above it (more --folds shrink the gap)"]

    def too_small(self) -> list[str]:
        """Undecided candidates: how much the study would have to grow to call them, at the observed spread."""
        undecided = [e for e in self.estimates if self.decisions[e.name].verdict == "undecided"]
        if not undecided:
            return []
        runs = self.search["folds"] * len(self.search["seeds"])
        parts = []
        for e in undecided:
            shrink = self.decisions[e.name].shrink_needed(self.eps)
            need = "far more data" if math.isinf(shrink) else \
                f"about {shrink ** 2:.0f}x the evaluated images (or {math.ceil(shrink ** 2 * runs)} (fold, seed) " \
                "runs if the spread comes from the runs)"
            parts.append(f"{e.name} ({need})")
        return [f"the study is too small to separate {len(undecided)} candidate(s) from the leader within "
                f"{self.eps:g}: " + "; ".join(parts)]


def length_key_of(e: Estimate) -> str:
    """The key that lengthens the validated epochs of the candidate's method (Method.length_key: a two-stage
    method validates in stage 2 only, which baseline.stage2_epochs lengthens, not train.epochs)."""
    from ...methods import REGISTRY

    names = {m.get("method") for m in e.recipe_runs} - {None}
    method = REGISTRY.get(names.pop()) if len(names) == 1 else None
    return method.length_key if method else "train.epochs"


def data_share(e: Estimate) -> float:
    """Images per CV run of the recipe's point (its trials' ``train_counts``, mean) over the images the recipe
    trains on (every out-of-fold image); NaN when either is unknown."""
    counts = [sum((m.get("train_counts") or {}).values()) for m in e.recipe_runs]
    if not counts or not all(counts) or e.oof is None or not e.oof.labels.size:
        return math.nan
    return float(np.mean(counts)) / e.oof.labels.size
