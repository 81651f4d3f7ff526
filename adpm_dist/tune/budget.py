"""`--budget-hours H`: plan the study that fits H hours, instead of stopping one mid-way.

A study cut off by a time limit is a partial estimate: some candidates miss folds, and nothing can be
read from it. So the budget is spent before anything runs, on the price (price.py): the study keeps
the longest prefix of its `--seeds` whose priced wall time on these resources fits H. A seed is one
complete CV of every candidate (a wave of folds), so fewer seeds is a smaller study, never a partial
one. When even one seed does not fit, nothing runs: the error gives the price of that smallest study
and what shrinks it (--methods, --space, train.epochs). Candidates without a recorded epoch cost are
priced first by --calibrate's short run (a budget needs every price).

On --resume the stored design (its seeds) stands: the budget only says whether what is left fits.

`seeds_within` is pure; `plan_within_budget` plans and prices.
"""
from __future__ import annotations

from collections.abc import Callable


class BudgetError(ValueError):
    """Not even the smallest study fits the budget."""


def seeds_within(seeds: list[int], hours: float, wall_hours_of: Callable[[list[int]], float]) -> list[int]:
    """The longest prefix of ``seeds`` whose price (``wall_hours_of(prefix)``) is within ``hours``; [] if none.
    Prices grow with the seeds, so the search stops at the first prefix that fits, from the longest."""
    if hours <= 0:
        raise ValueError(f"--budget-hours {hours:g}: expected a positive number of hours")
    for n in range(len(seeds), 0, -1):
        if wall_hours_of(seeds[:n]) <= hours:
            return seeds[:n]
    return []


def plan_within_budget(plan_for: Callable[[list[int]], object], seeds: list[int], hours: float,
                       price_of: Callable[[object], dict], resume: bool, stream) -> object:
    """The study planned by ``plan_for(seeds)`` cut to the seeds that fit ``hours`` (``price_of``: the price
    dict of a planned study, price.estimate's); its ``budget`` record says what was asked and what fits."""
    full = plan_for(seeds)
    total = price_of(full)
    if resume:
        if total["wall_hours"] > hours:
            print(f"budget: what is left of this study is priced at ~{total['wall_hours']:.2f} h wall, over "
                  f"--budget-hours {hours:g}; a resumed study keeps its seeds (its design), so it runs to the end",
                  file=stream, flush=True)
        return full
    prices = {len(seeds): total}

    def wall(prefix: list[int]) -> float:
        if len(prefix) not in prices:
            prices[len(prefix)] = price_of(plan_for(prefix))
        return prices[len(prefix)]["wall_hours"]

    kept = seeds_within(seeds, hours, wall)
    if not kept:
        smallest = prices[1]
        raise BudgetError(f"--budget-hours {hours:g}: the smallest complete study (seed {seeds[0]}, every candidate "
                          f"on every fold) is priced at ~{smallest['wall_hours']:.2f} h wall "
                          f"({smallest['cpu_hours']:.2f} CPU-hours, {smallest['trials']} trials); raise the budget "
                          "or shrink the study (fewer --methods, a smaller --space, fewer train.epochs)")
    study = full if kept == seeds else plan_for(kept)
    price = prices[len(kept)]
    study.budget = dict(study.budget, budget_hours=hours, seeds_asked=list(seeds), seeds_planned=kept,
                        priced_wall_hours=round(price["wall_hours"], 4), priced_cpu_hours=round(price["cpu_hours"], 4))
    if kept != seeds:
        print(f"budget: {len(seeds)} seed(s) are priced at ~{total['wall_hours']:.2f} h wall, over --budget-hours "
              f"{hours:g}; planned seed(s) {kept} (~{price['wall_hours']:.2f} h): a complete, smaller study "
              f"(adding the other seeds later is another study: another --output)", file=stream, flush=True)
    return study
