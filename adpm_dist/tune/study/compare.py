"""The leaderboard's decisions: each candidate's target-prior estimate with its interval, its paired
difference to the leader, a verdict against a region of practical equivalence, and the rule that names
the recommendation (docs/tune.md, "The estimate, the interval and the rule"; tests/test_study_stats.py).

- **Estimate**: macro-F1 under the target class prior of the candidate's pooled out-of-fold predictions,
  with Jeffreys' half image right and half wrong per class (target.py). The leader is the highest
  estimate among complete candidates.
- **Interval**: the paired two-level bootstrap (target.paired_bootstrap): seeds per fold, images and
  Jeffreys' pseudo-images within classes, the same draws for every candidate; 95% percentile intervals.
- **Verdict** with equivalence margin eps (``--equivalence``, default 0.01), difference d = candidate -
  leader and its interval [lo, hi], the non-inferiority reading clinical trials use:
  ``equal`` when lo >= -eps (at most eps worse, at the interval's level); ``clearly worse`` when
  hi < -eps; else ``undecided`` (the study is too small to tell; more data or seeds would).
- **Rule**: among the leader and its equals, the cheapest per trial, costs within COST_TOLERANCE of the
  cheapest counting as equal; among those the higher estimate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import stats, target
from .results import Estimate

# Measured per-trial hours of two candidates that compute the same thing (logit adjustment at tau 1 and
# balanced softmax) differ by up to ~20% on a shared machine: timing noise must not pick the answer.
COST_TOLERANCE = 0.25
EQUIVALENCE = 0.01
LEVEL = 0.95
N_BOOT = 2000


def rule_text(eps: float) -> str:
    return (f"among the leader and the candidates equal to it (the {LEVEL:.0%} interval of the paired difference "
            f"to the leader lies above -{eps:g}: at most {eps:g} macro-F1 worse), the cheapest per trial; costs "
            f"within {COST_TOLERANCE:.0%} of the cheapest count as equal, and among those the higher estimate")


@dataclass
class Difference:
    """Per-(fold, seed) paired difference of the raw fold figures (beside the estimate, for reference)."""
    mean: float
    low: float
    high: float
    pairs: int

    def text(self) -> str:
        if self.pairs == 0:
            return "-"
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def difference(a: Estimate, b: Estimate, level: float = LEVEL, n_boot: int = N_BOOT) -> Difference:
    d = stats.paired_differences(a.values("macro_f1"), b.values("macro_f1"))
    values = list(d.values())
    lo, hi = stats.bootstrap_interval(values, level, n_boot)
    return Difference(float(sum(values) / len(values)) if values else math.nan, lo, hi, len(values))


@dataclass
class Decision:
    """One candidate against the leader, on the target-prior estimate."""
    estimate: float
    low: float
    high: float
    balanced_accuracy: float
    diff: float = math.nan
    diff_low: float = math.nan
    diff_high: float = math.nan
    verdict: str = "incomplete"    # leader | equal | undecided | clearly worse | incomplete
    identical: bool = False         # the same prediction for every image and seed as the leader

    def interval_text(self) -> str:
        return "-" if math.isnan(self.estimate) else f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def diff_text(self) -> str:
        if self.verdict == "leader":
            return "leader"
        if self.identical:
            return "+0.000 (identical predictions)"
        return "-" if math.isnan(self.diff) else f"{self.diff:+.3f} [{self.diff_low:+.3f}, {self.diff_high:+.3f}]"

    def shrink_needed(self, eps: float) -> float:
        """How many times narrower the difference interval must get to call this candidate equal or clearly
        worse at the same mean (its sample size grows by about the square of this)."""
        half = (self.diff_high - self.diff_low) / 2
        gap = abs(self.diff + eps)
        return half / gap if gap > 0 else math.inf


def common_images(estimates: list[Estimate]) -> list[str]:
    keys = None
    for e in estimates:
        keys = set(e.oof.keys) if keys is None else keys & set(e.oof.keys)
    return sorted(keys or [])


def decide(estimates: list[Estimate], prior: np.ndarray, *, eps: float = EQUIVALENCE, n_boot: int = N_BOOT,
           seed: int = 0, level: float = LEVEL) -> tuple[Estimate | None, dict[str, Decision]]:
    """(leader, decision per candidate). Candidates without complete out-of-fold predictions are
    ``incomplete``: no estimate, never the leader. ``level``: of the difference intervals the verdicts read
    (a race's interim looks use a wider one, race.look_level); the estimates' own intervals stay at LEVEL."""
    ready = [e for e in estimates if e.oof is not None]
    decisions = {e.name: Decision(math.nan, math.nan, math.nan, math.nan) for e in estimates}
    if not ready:
        return None, decisions
    keys = common_images(ready)
    k = len(prior)
    labels, folds, preds = None, None, {}
    for e in ready:
        pos = np.searchsorted(e.oof.keys, keys)
        labels, folds = e.oof.labels[pos], e.oof.folds[pos]
        preds[e.name] = e.oof.predictions[:, pos]
    reps = target.paired_bootstrap(preds, labels, folds, k, prior, n_boot=n_boot, seed=seed)
    for e in ready:
        point = target.estimate_scores(preds[e.name], labels, k, prior)   # every seed's run, averaged
        lo, hi = target.percentile_interval(reps[e.name], LEVEL)
        decisions[e.name] = Decision(float(point["macro_f1"]), lo, hi, float(point["balanced_accuracy"]))
    lead = max(ready, key=lambda e: (decisions[e.name].estimate, -estimates.index(e)))
    for e in ready:
        d = decisions[e.name]
        if e is lead:
            d.verdict, d.diff, d.diff_low, d.diff_high = "leader", 0.0, 0.0, 0.0
            continue
        diff = reps[e.name] - reps[lead.name]
        d.diff = d.estimate - decisions[lead.name].estimate
        d.diff_low, d.diff_high = target.percentile_interval(diff, level)
        d.identical = bool(np.array_equal(preds[e.name], preds[lead.name]))
        d.verdict = verdict(d.diff_low, d.diff_high, eps)
    return lead, decisions


def verdict(low: float, high: float, eps: float) -> str:
    if low >= -eps:
        return "equal"
    if high < -eps:
        return "clearly worse"
    return "undecided"


def cost_per_trial(e: Estimate) -> float:
    """GPU-hours if any were used, else CPU-hours, per trial; unknown (no cost.json) counts as 0."""
    c = e.cost
    hours = c.get("gpu_hours") or c.get("cpu_hours") or 0.0
    return hours / c["trials"] if c.get("trials") else 0.0


def equals(estimates: list[Estimate], decisions: dict[str, Decision]) -> list[Estimate]:
    return [e for e in estimates if decisions[e.name].verdict in ("leader", "equal")]


def recommend(estimates: list[Estimate], decisions: dict[str, Decision], *,
              cost_tolerance: float = COST_TOLERANCE) -> Estimate | None:
    """The rule (rule_text): the cheapest of the leader and its equals, near-equal costs -> higher estimate."""
    pool = equals(estimates, decisions)
    if not pool:
        return None
    cheapest = min(cost_per_trial(e) for e in pool)
    cheap = [e for e in pool if cost_per_trial(e) <= cheapest * (1 + cost_tolerance)]
    return max(cheap, key=lambda e: (decisions[e.name].estimate, -cost_per_trial(e)))


def sentence(rec: Estimate | None, lead: Estimate | None, decisions: dict[str, Decision], estimates: list[Estimate],
             figure: str, eps: float) -> str:
    """The recommendation in one sentence that says why this candidate and not the leader, and its equals."""
    if rec is None:
        return "No recommendation: no candidate has complete out-of-fold predictions."
    d = decisions[rec.name]
    head = f"**Recommendation: {rec.name}** (macro-F1 {d.interval_text()}, {figure})"
    others = [e.name for e in equals(estimates, decisions) if e is not rec]
    listed = f"; equal to it within {eps:g}: {', '.join(others)}" if others else "; no other candidate is equal to it"
    undecided = [name for name, x in decisions.items() if x.verdict == "undecided"]
    if undecided:  # a lead the study cannot tell from these is a coin toss between them, and must say so
        listed += (f"; the study cannot tell the leader from {', '.join(undecided)} (undecided: their intervals reach "
                   f"both sides of -{eps:g}), so this choice among them is not evidence")
    if rec is lead:
        return f"{head}: it leads{listed}."
    ratio = cost_per_trial(lead) / cost_per_trial(rec) if cost_per_trial(rec) > 0 else math.inf
    why = (f"it is equal to the leader {lead.name} ({decisions[lead.name].estimate:.3f}; difference "
           f"{d.diff_text()}, within {eps:g}) and costs "
           + (f"{ratio:.1f}x less per trial" if ratio > 1 + COST_TOLERANCE else "about the same per trial, with the "
              "higher estimate among the cheapest"))
    return f"{head}: {why}{listed}."
