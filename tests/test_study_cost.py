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
