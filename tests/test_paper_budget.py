"""benchmarks/paper_budget.py's pure parts: every entry is the paper's setting plus one parameterisation
and alpha, and each figure is paired with the isotropic run of the same parameterisation and seed."""
from __future__ import annotations

import pytest

from benchmarks.paper_budget import PAPER, entries, paired_lines, parse_args


def test_entries_are_the_paper_setting_times_parameterisation_times_alpha():
    args = parse_args(["--predictions", "eps", "y0", "--alphas", "0", "1/6"])
    found = entries(args)
    assert set(found) == {"eps_alpha_0", "eps_alpha_1over6", "y0_alpha_0", "y0_alpha_1over6"}
    overrides, label = found["eps_alpha_1over6"]
    assert overrides[:len(PAPER)] == PAPER and "diffusion.prediction=eps" in overrides
    assert f"noise.alpha={1 / 6!r}" in overrides and label == "eps, alpha 1/6"
    with pytest.raises(SystemExit):
        parse_args(["--alphas", "1/6"])  # no isotropic twin to pair with


def test_differences_are_paired_by_seed_with_the_isotropic_twin():
    args = parse_args(["--predictions", "y0", "--alphas", "0", "1/2", "--seeds", "0", "1"])
    rows = [{"dataset": "d", "method": m, "seed": s, "macro_f1": f1, "tail_f1": f1 / 2}
            for m, s, f1 in [("y0_alpha_0", 0, 0.80), ("y0_alpha_0", 1, 0.90),
                             ("y0_alpha_1over2", 0, 0.85), ("y0_alpha_1over2", 1, 0.88)]]
    line = paired_lines(args, rows)[-1]
    assert "| d | y0, alpha 1/2 | 2 |" in line and "+0.050, -0.020" in line
    assert "0.015 ± 0.049" in line  # mean and sample std of (+0.05, -0.02)


def test_curves_title_says_whether_runs_were_stopped():
    from benchmarks.paper_budget import curves_title

    assert "plateaued" in curves_title([])
    assert "whole schedule" in curves_title(["train.stop_patience=0"])
    assert "plateaued" in curves_title(["train.stop_patience=0", "train.stop_patience=3"])
