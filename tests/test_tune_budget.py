"""--budget-hours plans the study that fits (tune/budget.py): the longest prefix of the seeds whose price
fits, a clear refusal when one seed does not, and a resumed study's design left alone."""
from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from adpm_dist.tune.budget import BudgetError, plan_within_budget, seeds_within


def price_per_seed(hours: float):
    """A price that grows by ``hours`` of wall time (and twice that in CPU-hours) per seed."""
    return lambda study: {"wall_hours": hours * len(study.seeds), "cpu_hours": 2 * hours * len(study.seeds),
                          "trials": 10 * len(study.seeds)}


def planner(calls: list):
    def plan_for(seeds):
        calls.append(list(seeds))
        return SimpleNamespace(seeds=list(seeds), budget={"budget_hours": None})
    return plan_for


def test_seeds_within_keeps_the_longest_prefix_that_fits():
    assert seeds_within([0, 1, 2], 2.5, lambda s: len(s) * 1.0) == [0, 1]
    assert seeds_within([0, 1, 2], 3.0, lambda s: len(s) * 1.0) == [0, 1, 2]  # exactly on the budget fits
    assert seeds_within([4, 2], 0.5, lambda s: len(s) * 1.0) == []
    with pytest.raises(ValueError, match="--budget-hours 0: expected a positive"):
        seeds_within([0], 0, lambda s: 0.0)


def test_a_budget_plans_fewer_seeds_and_records_why():
    calls, out = [], io.StringIO()
    study = plan_within_budget(planner(calls), [0, 1, 2], 2.2, price_per_seed(1.0), resume=False, stream=out)
    assert study.seeds == [0, 1] and calls == [[0, 1, 2], [0, 1], [0, 1]]
    assert study.budget == {"budget_hours": 2.2, "seeds_asked": [0, 1, 2], "seeds_planned": [0, 1],
                            "priced_wall_hours": 2.0, "priced_cpu_hours": 4.0}
    assert "planned seed(s) [0, 1] (~2.00 h)" in out.getvalue() and "3 seed(s) are priced at ~3.00 h" in out.getvalue()
    whole = plan_within_budget(planner([]), [0, 1], 5.0, price_per_seed(1.0), resume=False, stream=io.StringIO())
    assert whole.seeds == [0, 1] and whole.budget["seeds_planned"] == [0, 1]


def test_a_budget_below_one_seed_is_refused_with_its_price():
    with pytest.raises(BudgetError, match=r"smallest complete study \(seed 7, every candidate on every fold\) is "
                                          r"priced at ~1.50 h wall \(3.00 CPU-hours, 10 trials\)"):
        plan_within_budget(planner([]), [7, 8], 1.0, price_per_seed(1.5), resume=False, stream=io.StringIO())


def test_a_resumed_study_keeps_its_seeds_and_says_when_the_rest_is_over_budget():
    out = io.StringIO()
    study = plan_within_budget(planner([]), [0, 1], 1.0, price_per_seed(1.0), resume=True, stream=out)
    assert study.seeds == [0, 1] and "runs to the end" in out.getvalue()


def test_the_study_command_prices_then_plans_within_the_budget(fold_only_shards, tmp_path, capsys):
    """End to end on tiny data: --calibrate's short run prices ce, then the budget decides (a dry run)."""
    from test_study import cli as study_cli
    from test_tune_consolidate import TINY

    args = ["--dataset", "imagefolder", "--config", TINY, "--shards", str(fold_only_shards), "--methods", "ce",
            "--seeds", "0", "1", "--dry-run", "train.epochs=1"]
    assert study_cli().main(args + ["--output", str(tmp_path / "a"), "--budget-hours", "1000"]) == 0
    out = capsys.readouterr().out
    assert "budget:" not in out and "price before it runs" in out and "2 seed(s)" in out
    assert study_cli().main(args + ["--output", str(tmp_path / "b"), "--budget-hours", "1e-9"]) == 2
    assert "the smallest complete study (seed 0" in capsys.readouterr().err
