"""Where should a recipe stop? The epoch rules side by side (benchmarks/study_calibration.py --epoch-rules).

Every candidate's recipe is trained once more over its whole epoch plan with its `test` part tracked
(``train.stop_at_epoch=0``, ``train.track_eval=true``): a run stopped at epoch e trains exactly that run's
first e epochs (tests/test_selection.py) and tracking changes nothing it trains (tests/test_track_eval.py),
so one run gives the test score of the recipe stopped at any epoch it would validate. Read there:
- ``median``: the lower median of the CV trials' kept epochs, each chosen on its own carve-out (the rule
  before the pooled one);
- ``pooled``: the best pooled out-of-fold epoch (study/recipe.py ``pooled_epoch``: what recipe.yaml stops at
  now, where the trials tracked their held-out folds);
- ``last``: the whole plan;
- ``oracle``: each candidate's best test epoch (no rule can know it: the ceiling).
The regret of the study's recommendation under each rule is its test score's distance to the best
candidate's under the same rule. The recipe trained by study_calibration (the pooled rule) is checked against
the tracked run's figure at its epoch (``check``: their largest difference).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

RULES = ("median", "pooled", "last", "oracle")


def tracked_run(where: Path, name: str, recipe: Path, todo: list) -> Path:
    """The recipe trained over its whole plan with `test` tracked (queued on ``todo`` unless finished)."""
    from benchmarks.study_calibration import recipe_run  # here: study_calibration imports this module

    return recipe_run(where, name, recipe, None, None, todo, runs="recipe_tracked", group=f"{name}_tracked",
                      overrides=("train.stop_at_epoch=0", "train.track_eval=true"))


def test_curve(metrics: dict) -> dict[int, float]:
    """Epoch -> the tracked test part's macro-F1 with its rows rescaled to a balanced mix."""
    from adpm_dist.tune.study.target import prior_scores

    curve = {}
    for t in metrics.get("eval_track") or []:
        c = np.asarray(t["confusion"], dtype=float)
        curve[int(t["epoch"])] = float(prior_scores(c, np.full(len(c), 1.0 / len(c)))["macro_f1"])
    return curve


def rule_epochs(trials: list[dict], curve: dict[int, float]) -> dict[str, int]:
    """Each rule's stop epoch for one candidate (``trials``: its CV trials' metrics.json), as recipe.py fixes it
    with and without the trials' tracked held-out folds (0, nothing to stop: the last epoch)."""
    from adpm_dist.tune.study.recipe import fixed_choices

    last = max(curve)
    untracked = [{k: v for k, v in m.items() if k != "eval_track"} for m in trials]
    chosen = {rule: fixed_choices(runs)[0].get("train.stop_at_epoch") or last
              for rule, runs in (("median", untracked), ("pooled", trials))}
    return {rule: min(epoch, last) for rule, epoch in chosen.items()} | {"last": last,
                                                                        "oracle": max(curve, key=curve.get)}


def epoch_fields(rec: str, curves: dict[str, dict[int, float]], epochs: dict[str, dict[str, int]],
                 recipes: dict[str, float]) -> dict:
    """One draw's figures per rule: the recommendation's regret and the test-best candidate; ``recipes``:
    the pooled-rule recipe runs' own test scores, checked against the tracked curves."""
    fields = {"epochs": epochs}
    for rule in RULES:
        tests = {name: curves[name][epochs[name][rule]] for name in curves}
        fields[rule] = {"regret": max(tests.values()) - tests[rec], "best": max(tests, key=tests.get), "tests": tests}
    diffs = [abs(recipes[n] - fields["pooled"]["tests"][n]) for n in curves if n in recipes]
    fields["check"] = max(diffs) if diffs else math.nan
    return fields


def draw_epoch_fields(where: Path, report: dict, recipes: dict[str, float], run_todo) -> dict | None:
    """Train (``run_todo(todo)``) and read every candidate's tracked recipe; None until all have finished."""
    import json

    todo, runs = [], {}
    for e in report["estimates"]:
        if e.oof is None or e.selections[None].point is None:
            continue
        runs[e.name] = (tracked_run(where, e.name, where / "recipes" / f"{e.name}.yaml", todo), e.recipe_runs)
    if todo:
        run_todo(todo)
    if not runs or not all((run / "metrics.json").is_file() for run, _ in runs.values()):
        return None
    curves = {n: test_curve(json.loads((run / "metrics.json").read_text())) for n, (run, _) in runs.items()}
    epochs = {n: rule_epochs(trials, curves[n]) for n, (_, trials) in runs.items()}
    return epoch_fields(report["recommendation"].name, curves, epochs, recipes)


def epoch_section(rows: list[dict]) -> list[str]:
    """The rules' table: median / max regret over the draws, then per draw each rule's epochs and regret."""
    rows = [r for r in rows if r.get("epoch_rules")]
    if not rows:
        return []
    lines = ["", "Where the recipe stops (`--epoch-rules`): the recommendation's regret when every candidate's recipe "
             "stops by each rule, read from one tracked run per recipe (benchmarks/recipe_epochs.py).", "",
             "| rule | median regret | max regret | draws with regret > 0.03 |", "|---|---:|---:|---:|"]
    for rule in RULES:
        regrets = [r["epoch_rules"][rule]["regret"] for r in rows]
        lines.append(f"| {rule} | {np.median(regrets):.3f} | {max(regrets):.3f} | "
                     f"{sum(g > 0.03 for g in regrets)}/{len(rows)} |")
    lines += ["", "| draw | rec | epochs of rec (median / pooled / last / oracle) | regret median / pooled / last / "
              "oracle | test-best by pooled | recipe vs tracked |", "|---|---|---|---|---|---:|"]
    for r in rows:
        f = r["epoch_rules"]
        ep = f["epochs"][r["new_rec"]]
        lines.append(f"| {r['draw']} | {r['new_rec']} | {' / '.join(str(ep[k]) for k in RULES)} | "
                     f"{' / '.join(format(f[k]['regret'], '.3f') for k in RULES)} | {f['pooled']['best']} | "
                     f"{f['check']:.4f} |")
    return lines
