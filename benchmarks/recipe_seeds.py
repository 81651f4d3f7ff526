"""The calibration benchmark's view of the recipes' own training seed (benchmarks/study_calibration.py
`--recipe-seeds`): each recipe trained again with other `run.seed` values, so a draw's regret can be read on
the mean over training runs instead of on the one run each recipe got.

Why: regret is "the test-best recipe's macro-F1 minus the recommendation's", each from one training run.
On a long-tailed draw a tail class has 1-3 training images, and which of them a run gets right moves its
balanced test score by points. What a perfect pick made on one training run loses on another run of the
same recipes (``seed_floor``) is the noise floor of a regret measured on one run; what the candidate best on
the mean loses run by run (``seed_best_regrets``) is what even the right answer pays for being judged on one.
"""
from __future__ import annotations

import numpy as np


def seed_fields(rec: str, by_seed: dict[int, dict[str, float]]) -> dict:
    """A draw's seed columns ({} with fewer than two seeds, or the recommendation not scored at each):
    ``by_seed`` is training seed -> candidate -> test macro-F1; only candidates scored at every seed count.

    - ``seed_mean``: each candidate's mean over the seeds; ``seed_best``: the best on that mean;
    - ``seed_regret``: the recommendation's regret on the means;
    - ``seed_regrets``: its regret seed by seed (the first is the table's single-run regret when the
      recipe's own seed comes first);
    - ``seed_best_regrets``: the regret seed by seed of the candidate best on the mean (the right answer,
      judged on one run);
    - ``seed_floor``: the largest regret of a perfect pick on one seed judged on another seed;
    - ``seed_sd``: each candidate's standard deviation over the seeds (ddof 1);
    - ``seed_rec_scores``: the recommendation's test score seed by seed.
    """
    seeds = sorted(by_seed)
    if len(seeds) < 2:
        return {}
    names = sorted(set.intersection(*(set(by_seed[s]) for s in seeds)))
    if rec not in names:
        return {}
    scores = {s: {n: by_seed[s][n] for n in names} for s in seeds}
    mean = {n: float(np.mean([scores[s][n] for s in seeds])) for n in names}
    best = max(mean, key=mean.get)

    def regret(seed: int, pick: str) -> float:
        return max(scores[seed].values()) - scores[seed][pick]

    floor = max(regret(b, max(names, key=scores[a].get)) for a in seeds for b in seeds if a != b)
    return {"seed_count": len(seeds), "seed_mean": mean, "seed_best": best, "seed_regret": mean[best] - mean[rec],
            "seed_regrets": [regret(s, rec) for s in seeds], "seed_floor": floor,
            "seed_best_regrets": [regret(s, best) for s in seeds],
            "seed_best_by_seed": [max(names, key=scores[s].get) for s in seeds],
            "seed_rec_scores": [scores[s][rec] for s in seeds],
            "seed_sd": {n: float(np.std([scores[s][n] for s in seeds], ddof=1)) for n in names}}


def seed_section(rows: list[dict]) -> list[str]:
    """The recipe-seed table: per draw the recommendation's regret on one run and on the seed mean, the
    test-best per seed, the floor, and the candidates' seed spread; a summary line over the draws."""
    done = [r for r in rows if r.get("seed_count")]
    if not done:
        return []
    mean_regret = [r["seed_regret"] for r in done]
    right = [x for r in done for x in r["seed_best_regrets"]]
    floor = [r["seed_floor"] for r in done]
    runs = [(r["new_interval"], x) for r in done for x in r["seed_rec_scores"]]
    held = sum(lo <= x <= hi for (lo, hi), x in runs)
    lines = ["", f"**The recipes' own training seed (`--recipe-seeds`), {len(done)} draw(s)**: the recommendation's "
             f"regret on the seed mean: median {np.median(mean_regret):.3f}, max {max(mean_regret):.3f}; a perfect "
             f"pick on one run judged on another run of the same recipes (the floor of a one-run regret): median "
             f"{np.median(floor):.3f}, max {max(floor):.3f}; the best candidate on the mean, judged run by run: "
             f"max {max(right):.3f}. The recommendation's 95% interval held {held} of its "
             f"recipe's {len(runs)} training runs' test scores.", "",
             "| draw | seeds | rec | its regret seed by seed | on the seed mean | test-best seed by seed | the best on "
             "the mean: its regret seed by seed | floor | seed sd, median over candidates (max) |",
             "|---|---:|---|---|---:|---|---|---:|---|"]
    for r in done:
        sd = list(r["seed_sd"].values())
        lines.append(f"| {r['draw']} | {r['seed_count']} | {r['new_rec']} | "
                     f"{', '.join(f'{x:.3f}' for x in r['seed_regrets'])} | {r['seed_regret']:.3f} | "
                     f"{', '.join(r['seed_best_by_seed'])} | {r['seed_best']}: "
                     f"{', '.join(f'{x:.3f}' for x in r['seed_best_regrets'])} | {r['seed_floor']:.3f} | "
                     f"{np.median(sd):.3f} ({max(sd):.3f}) |")
    return lines
