"""Racing (``tune/study.py --race``): run a study wave by wave and drop a candidate once it is clearly worse
than the leader, so the clearly worse stop costing trials (docs/tune.md, "Racing").

A **wave** is one (seed, fold): every remaining candidate's trials of that seed evaluated on that fold.
The waves run **seed by seed**: the first seed's folds 0 .. F-1, then the next seed's, and so on. After
each of the first seed's waves from the second on (and after its last fold, when more seeds follow), the
candidates are compared on the first seed's folds done so far exactly as the final answer compares them
(compare.decide: target-prior estimate of the pooled out-of-fold predictions, paired bootstrap,
equivalence margin); a candidate whose difference to the leader lies wholly below -eps (``clearly
worse``) runs no further trial. Seed by seed, a clearly worse candidate stops after two trials of one
seed instead of two folds of every seed: a look reads what a one-seed study would (one training run per
fold), which is all the answer of a one-seed study ever reads. Looking after every wave is looking
several times: each look reads a wider interval (look_level, Bonferroni over the planned looks), so the
chance that a candidate truly within the margin is dropped at any look stays within the final rule's.
``raced.json`` records each drop with its evidence and wave; the consolidation lists them and the study
counts as complete for the candidates it kept.

A clearly worse candidate whose training a still-racing candidate replays (shared training: posthoc_la
over ce, study/shared.py) keeps running: dropping it would save nothing, since the derived candidate
would then train the same weights itself, and it would lose the source's own results. It drops at a
later look once nothing racing replays it.

Nested CV (fold-only shards): wave (s, k) is outer fold k whole for seed s, its CV trials on fold k and the
inner trials that choose its point (trained without fold k, evaluated on the others), so each look
compares the outer scores of the folds done exactly as the final answer would.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...files import atomic_write_json
from . import compare, target
from .results import load_target, read_estimates, train_counts_of

RACED_FILE = "raced.json"
MIN_WAVES = 2  # never drop on one fold: its images are a third of the evidence at most


@dataclass(frozen=True)
class Wave:
    """One (seed, fold) of a race: its trials, and whether the candidates are compared after it."""
    seed: int
    fold: int
    trials: list
    looks: bool

    def where(self, seeds: int) -> str:
        return f"fold {self.fold}" if seeds == 1 else f"fold {self.fold} of seed {self.seed}"


def race_floor(hours: dict[str, float], folds: int, seeds: int = 1) -> float:
    """The least a race of ``folds`` x ``seeds`` waves can cost, given each candidate's hours over the whole
    study: every candidate's share of the first MIN_WAVES waves (nothing is dropped before), then the
    cheapest alone."""
    if not hours:
        return 0.0
    first = min(1.0, MIN_WAVES / (folds * seeds))
    return first * sum(hours.values()) + (1 - first) * min(hours.values())


def wave_of(trial) -> tuple[int, int]:
    """(seed, outer fold) of the wave a trial serves: its evaluation fold, or for an inner trial of nested CV
    its outer fold."""
    return trial.seed, trial.fold if trial.outer is None else trial.outer


def waves(trials: list, folds: int, seeds: list[int], first_look: int = MIN_WAVES) -> list[Wave]:
    """The trials as waves, seed by seed and fold by fold (nested: each with the inner trials choosing its
    outer fold's point); a look follows each of the first seed's waves from the ``first_look``-th on, but never
    the study's last wave (the answer decides there)."""
    order = [(s, k) for s in seeds for k in range(folds)]
    return [Wave(s, k, [t for t in trials if wave_of(t) == (s, k)],
                 looks=s == seeds[0] and k + 1 >= first_look and w + 1 < len(order))
            for w, (s, k) in enumerate(order)]


def batch_text(trials: list) -> str:
    """The waves of a batch of trials, in words: "seed 0, folds 0-1; seed 1, fold 0" (a batch's folds of a
    seed are consecutive)."""
    by_seed: dict[int, list[int]] = {}
    for s, k in sorted({wave_of(t) for t in trials}):
        by_seed.setdefault(s, []).append(k)
    return "; ".join(f"seed {s}, " + (f"fold {ks[0]}" if len(ks) == 1 else f"folds {ks[0]}-{ks[-1]}")
                     for s, ks in by_seed.items())


def looks(folds: int, seeds: int = 1, first_look: int = MIN_WAVES) -> int:
    """How many interim looks a race of ``folds`` x ``seeds`` waves takes (the rule is waves()'s)."""
    return sum(w.looks for w in waves([], folds, list(range(seeds)), first_look))


def look_level(folds: int, level: float = compare.LEVEL, seeds: int = 1, first_look: int = MIN_WAVES) -> float:
    """The two-sided level of each look's difference interval: the drop rule (upper end below -eps) is a
    one-sided test at (1 - level) / 2; split over the planned looks (Bonferroni), the chance of a drop at
    any look, for a candidate truly within eps of the leader, is at most that of the final verdict.
    E.g. 5 folds: 3 looks at 98.3% each (x 2 seeds: 4 looks at 98.75%); 3 folds: 1 look at 95%."""
    return 1 - (1 - level) / max(1, looks(folds, seeds, first_look))


def load_raced(out: Path) -> dict:
    path = Path(out) / RACED_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def still_racing(study) -> list:
    """``study.todo`` less the trials of candidates an earlier pass of this race dropped (raced.json): what a
    resumed race will run, and so what its price counts."""
    raced = load_raced(study.out)
    return [t for t in study.todo if t.candidate not in raced]


def reused_sources(study) -> dict[str, set[str]]:
    """Candidate -> the candidates whose whole training its trials reuse (study/shared.py): replayed over
    (``derived_from``: posthoc_la over CE) or started from (a ``prefix_from`` whose source's prefix is its
    whole training, ``SharedPrefix.source_only``: cRT's stage 2 from CE). Dropping such a source saves
    nothing: the candidate that reuses it would train the same epochs itself."""
    from .shared import prefix_key  # the planner's own reading of a trial's prefix

    by_id = {t.id: t for t in study.trials}
    whole = {i for i in {t.prefix_from for t in study.trials} if i in by_id and prefix_key(study, by_id[i])[1]}
    needs: dict[str, set[str]] = {}
    for t in study.trials:
        for source in (t.derived_from, t.prefix_from if t.prefix_from in whole else None):
            if source in by_id:
                needs.setdefault(t.candidate, set()).add(by_id[source].candidate)
    return needs


def keep_sources(drops: set[str], racing: set[str], needs: dict[str, set[str]]) -> dict[str, list[str]]:
    """The candidates of ``drops`` that a candidate still racing after these drops replays, each with the
    candidates replaying it: they keep running (racing: every candidate not yet dropped)."""
    kept: dict[str, list[str]] = {}
    while True:
        staying = racing - (drops - set(kept))
        more = {s: sorted(c for c in staying if s in needs.get(c, ())) for s in drops - set(kept)}
        more = {s: by for s, by in more.items() if by}
        if not more:
            return kept
        kept |= more


def interim(out: Path, search: dict, folds_done: int, *, seeds: list[int] | None = None, prior: str = "balanced",
            eps: float = compare.EQUIVALENCE, dropped: set[str] = frozenset(), level: float = compare.LEVEL):
    """(leader, decisions) of the candidates still racing, on the first ``folds_done`` folds of ``seeds``
    (default: every seed) only."""
    partial = copy.deepcopy(search) | {"folds_done": folds_done} | ({"seeds": list(seeds)} if seeds else {})
    partial["candidates"] = [c for c in search["candidates"] if c["name"] not in dropped]
    results, names, estimates = read_estimates(out, partial)
    return compare.decide(estimates, target.target_prior(load_target(prior), names, train_counts_of(results)), eps=eps,
                          level=level)


def race(study, run_wave: Callable[[list], None], *, prior: str = "balanced", eps: float = compare.EQUIVALENCE,
         say: Callable[[str], None] = print, first_look: int = MIN_WAVES) -> dict:
    """Run ``study.todo`` wave by wave through ``run_wave(trials)``; returns raced.json's content (candidate ->
    wave, leader, difference and interval). A resumed race keeps its earlier drops. The waves between two
    looks go to ``run_wave`` together (the first two; a later seed's whole): one batch keeps every core busy
    to its end, where wave by wave each wave's last trials left cores idle. ``first_look``: the waves before
    the first look (the rule's MIN_WAVES; benchmarks/race_replay.py measures another)."""
    raced = load_raced(study.out)
    n_seeds = len(study.seeds)
    level = look_level(study.folds, seeds=n_seeds, first_look=first_look)
    todo = set(t.id for t in study.todo)
    needs = reused_sources(study)
    all_waves = waves(study.trials, study.folds, study.seeds, first_look)
    pending: list = []  # the waves since the last look run as one batch: nothing is decided between them
    for w, wave in enumerate(all_waves, start=1):
        pending += [t for t in wave.trials if t.id in todo and t.candidate not in raced]
        if not wave.looks and w < len(all_waves):
            continue
        if pending:
            run_wave(pending)
            pending = []
        if not wave.looks:
            continue
        search = json.loads((study.out / "search.json").read_text())
        lead, decisions = interim(study.out, search, wave.fold + 1, seeds=[wave.seed], prior=prior, eps=eps,
                                  dropped=set(raced), level=level)
        worse = {name for name, d in decisions.items() if d.verdict == "clearly worse"}
        kept = keep_sources(worse, set(decisions), needs)
        for name, by in kept.items():
            say(f"race: {name} is clearly worse after {wave.where(n_seeds)} ({decisions[name].diff_text()} to the "
                f"leader {lead.name}) but keeps running: {', '.join(by)} reuse(s) its training (read out of it or "
                "started from it), so dropping it saves nothing")
        for name, d in decisions.items():
            if name in worse and name not in kept:
                seeds = {"seeds": [wave.seed]} if n_seeds > 1 else {}
                raced[name] = {"wave": w, "folds": wave.fold + 1, **seeds, "leader": lead.name,
                               "difference": d.diff, "interval": [d.diff_low, d.diff_high], "level": level,
                               "equivalence": eps}
                say(f"race: {name} dropped after {wave.where(n_seeds)} (wave {w} of {len(all_waves)}): "
                    f"{d.diff_text()} to the leader {lead.name} ({level:.1%} interval), below -{eps:g}")
        atomic_write_json(study.out / RACED_FILE, raced)
    return raced
