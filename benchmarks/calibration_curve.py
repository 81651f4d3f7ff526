"""The calibration benchmark's view of `--learning-curve` (benchmarks/study_calibration.py): does the
recipe's expected score (adpm_dist/tune/study/curve.py, eq. LC1-LC2) cover the recipe's test score, and
which candidate would it have recommended?"""
from __future__ import annotations

import numpy as np


def curve_fields(report: dict, tests: dict[str, float]) -> dict:
    """A draw's learning-curve columns ({} when its study ran no half runs): the recommendation's expected
    recipe score and whether it held the recipe's test score; the candidate with the highest expected recipe
    score (among those with a recipe scored) and its regret."""
    curves = {c.name: c for c in report.get("curves") or [] if c.name in tests}
    rec = report["recommendation"]
    if not curves or rec is None or rec.name not in curves:
        return {}
    mine = curves[rec.name]
    top = max(curves.values(), key=lambda c: c.recipe)
    return {"curve_interval": (mine.low, mine.high), "curve_estimate": mine.recipe,
            "curve_covered": mine.low <= tests[rec.name] <= mine.high,
            "curve_rec": top.name, "curve_regret": max(tests.values()) - tests[top.name],
            "curve_all": len(curves) == len(tests)}


def curve_section(rows: list[dict]) -> list[str]:
    """The learning-curve table: coverage of the expected recipe score, and the regret of recommending the
    highest expected recipe score, over the draws whose studies ran the half runs."""
    from adpm_dist.tune.study.target import wilson_interval

    done = [r for r in rows if r.get("curve_interval")]
    if not done:
        return []
    covered = sum(r["curve_covered"] for r in done)
    lo, hi = wilson_interval(covered, len(done))
    full = [r for r in done if r["curve_all"]]
    regret = [r["curve_regret"] for r in full]
    lines = ["", f"**The recipe's expected score (`--learning-curve`), {len(done)} draw(s)**: the recommendation's "
             f"interval held its recipe's test score in {covered}/{len(done)} (Wilson {lo:.2f}-{hi:.2f}); "
             + (f"recommending the highest expected recipe score instead: median regret {np.median(regret):.3f}, "
                f"max {max(regret):.3f} ({len(full)} draws)." if full else "no draw has every candidate's curve."),
             "", "| draw | rec: expected recipe score [95%] | its test score | covered | highest expected: candidate, "
             "regret |", "|---|---|---:|---|---|"]
    for r in done:
        lo_r, hi_r = r["curve_interval"]
        regret_text = "-" if not r["curve_all"] else f"{r['curve_rec']}, {r['curve_regret']:.3f}"
        lines.append(f"| {r['draw']} | {r['new_rec']}: {r['curve_estimate']:.3f} [{lo_r:.3f}, {hi_r:.3f}] | "
                     f"{r['new_test']:.3f} | {'yes' if r['curve_covered'] else 'no'} | {regret_text} |")
    return lines
