"""benchmarks/study_cost.py's pure parts: the price line it reads is the one the study prints, and the
measured CPU-hours add every trial's own CPU time, replays included."""
from __future__ import annotations

import json

from benchmarks.study_cost import PRICE, measured

from adpm_dist.tune.price import EpochCost, Row, estimate, price_lines


def test_the_price_line_the_study_prints_is_read_back():
    rows = [Row("ce", 4, 30, EpochCost(2.0, 1.5, 3)), Row("adpm", 2, 40, None)]
    total = estimate(rows, 1.0, 0.0, 2)
    found = PRICE.search("\n".join(price_lines(rows, total)))
    assert found and int(found.group(1)) == 6 and float(found.group(3)) == round(total["cpu_hours"], 3)


def test_measured_adds_trained_and_replayed_trials(tmp_path):
    for name, cost in {"a": {"wall_s": 100, "cpu_s": 720, "cpus": 1}, "b": {"wall_s": 50, "cpus": 2},
                       "c": {"wall_s": 3, "cpu_s": 36, "cpus": 1, "replayed_from": "a"}}.items():
        (tmp_path / "trials" / name).mkdir(parents=True)
        (tmp_path / "trials" / name / "cost.json").write_text(json.dumps(cost))
    (tmp_path / "wall.json").write_text(json.dumps({"wall_s": 1800}))
    m = measured(tmp_path)
    assert m["trained"] == 2 and m["replayed"] == 1 and m["wall_hours"] == 0.5
    assert abs(m["cpu_hours"] - (720 + 100 + 36) / 3600) < 1e-12  # CPU time; wall x CPUs where none was recorded


def write_study(where, costs: dict, seeds=(0,)) -> None:
    """A study directory with search.json, cv_results.csv and each trial's cost.json: (candidate, fold) -> CPU
    seconds of each seed's trial."""
    rows = ["trial,candidate,point,seed,fold,outer,status"]
    for ((cand, fold), cpu_s), seed in ((item, seed) for item in costs.items() for seed in seeds):
        tid = f"{cand}_seed{seed}_fold{fold}"
        rows.append(f"{tid},{cand},default,{seed},{fold},,done")
        (where / "trials" / tid).mkdir(parents=True)
        (where / "trials" / tid / "cost.json").write_text(json.dumps({"wall_s": cpu_s, "cpu_s": cpu_s, "cpus": 1}))
    (where / "cv_results.csv").write_text("\n".join(rows) + "\n")
    (where / "search.json").write_text(json.dumps({"seeds": list(seeds)}))


def test_the_race_floor_is_every_candidate_before_the_first_look_then_the_answer_alone(tmp_path):
    """An oracle race drops every candidate but the recommendation at its first look: the first MIN_WAVES (2)
    folds of everyone, as shared training trained them, then the recommendation's other folds, as the full
    study trained them."""
    from benchmarks.study_cost import race_floor

    full = {(c, k): 3600.0 for c in ("ce", "la", "adpm") for k in range(5)}
    shared = full | {("adpm", 0): 1800.0, ("adpm", 1): 1800.0, ("adpm", 4): 1800.0}
    write_study(tmp_path / "full", full)
    assert race_floor(tmp_path, "la") == 2 * 3 + 3          # no shared study: the full one's first folds
    write_study(tmp_path / "shared", shared)
    assert race_floor(tmp_path, "la") == 2 * 2 + 2 * 0.5 + 3  # adpm's first folds shared, la alone after them
    assert race_floor(tmp_path, "adpm") == 2 * 2 + 2 * 0.5 + 3  # its late folds as trained alone (full study)


def test_with_two_seeds_the_race_floor_counts_the_first_seeds_first_folds(tmp_path):
    """Waves run seed by seed: before the first look every candidate runs folds 0 and 1 of seed 0 only; the
    recommendation then runs its 8 other (seed, fold) trials alone."""
    from benchmarks.study_cost import race_floor

    write_study(tmp_path / "full", {(c, k): 3600.0 for c in ("ce", "la", "adpm") for k in range(5)}, seeds=(0, 1))
    assert race_floor(tmp_path, "la") == 3 * 2 + 8


def test_a_race_is_priced_as_a_range_down_to_its_floor():
    """race_floor: every candidate's first MIN_WAVES (2) of 5 waves (of 10 with two seeds: the waves run seed
    by seed), then the cheapest alone (closed form); the price line of a --race study gives that floor and
    the full total as its range."""
    from adpm_dist.tune.price import race_line
    from adpm_dist.tune.study.race import race_floor

    assert race_floor({"ce": 1.0, "adpm": 4.0}, 5) == 0.4 * 5.0 + 0.6 * 1.0
    assert race_floor({"ce": 1.0, "adpm": 4.0}, 2) == 5.0  # no look before the last wave: nothing is saved
    assert race_floor({"ce": 1.0, "adpm": 4.0}, 5, seeds=2) == 0.2 * 5.0 + 0.8 * 1.0
    rows = [Row("ce", 10, 30, EpochCost(2.0, 1.0, 3)), Row("adpm", 10, 40, EpochCost(3.0, 3.0, 3))]
    total = estimate(rows, 1.0, 0.0, 2)
    ce, adpm = 10 * 30 * 1.0 / 3600, 10 * 40 * 3.0 / 3600
    line = race_line(rows, total, 5, held=(1.0, 0.0, 2))
    assert f"between {0.4 * (ce + adpm) + 0.6 * ce:.3f} CPU-hours" in line and "after 2 of 5 folds)" in line
    two_seeds = race_line(rows, total, 5, 2, held=(1.0, 0.0, 2))
    assert f"between {0.2 * (ce + adpm) + 0.8 * ce:.3f} CPU-hours" in two_seeds
    assert "after 2 of 5 folds of the first of 2 seeds" in two_seeds
    unpriced = race_line(rows + [Row("la", 10, 30, None)], total, 5, held=(1.0, 0.0, 2))
    assert "not priced until every candidate is" in unpriced and "CPU-hours" not in unpriced
