"""The leaderboard's arithmetic: paired differences with bootstrap intervals, the leader, and the rule
that names the recommendation. Pure functions over results.Estimate (tests/test_study_stats.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from . import stats
from .results import Estimate

# Measured per-trial hours of two candidates that compute the same thing (logit adjustment at tau 1 and
# balanced softmax) differ by up to ~20% on a shared machine: timing noise must not pick the answer.
COST_TOLERANCE = 0.25

RULE = ("the cheapest candidate (measured CPU/GPU-hours per trial) among the leader and the candidates whose "
        "95% bootstrap interval of the paired per-(fold, seed) macro-F1 difference to the leader includes 0; "
        f"costs within {COST_TOLERANCE:.0%} of the cheapest count as equal, and among those the higher mean "
        "macro-F1 is recommended")


@dataclass
class Difference:
    mean: float
    low: float
    high: float
    pairs: int

    def text(self) -> str:
        if self.pairs == 0:
            return "-"
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def difference(a: Estimate, b: Estimate, level: float = 0.95, n_boot: int = 2000) -> Difference:
    d = stats.paired_differences(a.values("macro_f1"), b.values("macro_f1"))
    values = list(d.values())
    lo, hi = stats.bootstrap_interval(values, level, n_boot)
    return Difference(float(sum(values) / len(values)) if values else math.nan, lo, hi, len(values))


def leader(estimates: list[Estimate]) -> Estimate | None:
    """Highest mean macro-F1 among complete estimates (any, if none is complete); ties -> listed first."""
    pool = [e for e in estimates if e.complete] or [e for e in estimates if e.components]
    return max(pool, key=lambda e: (e.mean_std("macro_f1")[0], -estimates.index(e))) if pool else None


def cost_per_trial(e: Estimate) -> float:
    """GPU-hours if any were used, else CPU-hours, per trial; unknown (no cost.json) counts as 0."""
    c = e.cost
    hours = c.get("gpu_hours") or c.get("cpu_hours") or 0.0
    return hours / c["trials"] if c.get("trials") else 0.0


def recommend(estimates: list[Estimate], lead: Estimate | None, to_leader: dict[str, Difference], *,
              cost_tolerance: float = COST_TOLERANCE) -> Estimate | None:
    """RULE: among the leader and the complete candidates not distinguishable from it, the cheapest,
    where costs within `cost_tolerance` of the cheapest are equal; among equals the higher mean macro-F1
    (then the cheaper)."""
    if lead is None:
        return None
    tied = [e for e in estimates if e is lead or (e.complete and to_leader[e.name].pairs
                                                   and stats.covers_zero((to_leader[e.name].low, to_leader[e.name].high)))]
    cheapest = min(cost_per_trial(e) for e in tied)
    cheap = [e for e in tied if cost_per_trial(e) <= cheapest * (1 + cost_tolerance)]
    return max(cheap, key=lambda e: (e.mean_std("macro_f1")[0], -cost_per_trial(e)))


def sentence(rec: Estimate | None, lead: Estimate | None, protocol_figure: str) -> str:
    if rec is None:
        return "No recommendation: no candidate has an evaluated fold."
    m, s = rec.mean_std("macro_f1")
    why = "it leads" if rec is lead else f"the leader is {lead.name}"
    return (f"**Recommendation: {rec.name}** (macro-F1 {m:.3f} ± {s:.3f}, {protocol_figure}); {why}, and the rule "
            f"is {RULE}.")
