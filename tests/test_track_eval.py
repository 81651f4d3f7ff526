"""train.track_eval and the recipe's pooled out-of-fold epoch (issue 32, "the kept epoch count ... fixed from the
CV on pooled out-of-fold scores per epoch"): tracking the eval part changes nothing the run trains or keeps,
its last counts are the final evaluation's, and study/recipe.py's pooled_epoch reads the summed counts as
target.py's closed form does."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from adpm_dist.config import load_config
from adpm_dist.tune.study.recipe import fixed_choices, pooled_epoch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "digits_lt_tiny.yaml"
TIMING = {"images_per_s", "step_time_s", "max_mem_mb", "val_time_s", "tracked_macro_f1"}


def final_counts(run_dir: Path, names: list[str]) -> list[list[int]]:
    """The final evaluation's confusion counts, from predictions.csv."""
    c = np.zeros((len(names), len(names)), dtype=int)
    with open(run_dir / "predictions.csv") as f:
        for row in csv.DictReader(f):
            c[names.index(row["label"]), names.index(row["prediction"])] += 1
    return c.tolist()


def test_tracking_the_eval_part_changes_nothing_and_ends_on_the_final_evaluation(digits_shards, tmp_path,
                                                                                  one_torch_thread):
    from adpm_dist.runtime.engine import train

    base = [f"data.shards={digits_shards}", "method=ce", "train.epochs=3", "train.warmup_epochs=1", "train.val_every=1"]
    plain = train(load_config(TINY, base + [f"run.output_dir={tmp_path / 'plain'}"]))
    tracked = train(load_config(TINY, base + [f"run.output_dir={tmp_path / 'tracked'}", "train.track_eval=true"]))
    assert "eval_track" not in plain
    rows = [[{k: v for k, v in r.items() if k not in TIMING} for r in run["history"]] for run in (plain, tracked)]
    assert rows[0] == rows[1] and plain["macro_f1"] == tracked["macro_f1"]  # training and selection untouched
    assert [t["epoch"] for t in tracked["eval_track"]] == [1, 2, 3]
    assert all("tracked_macro_f1" in r for r in tracked["history"])
    names = list(tracked["train_counts"])
    if tracked["best_epoch"] == 3:
        assert tracked["eval_track"][-1]["confusion"] == final_counts(tmp_path / "tracked", names)

    # a recipe-like run (no validation data): tracked where it would validate, the last one its final evaluation
    refit = train(load_config(TINY, base + [f"run.output_dir={tmp_path / 'all'}", "train.track_eval=true",
                                            "data.val_part=none", "train.select=last"]))
    assert [t["epoch"] for t in refit["eval_track"]] == [1, 2, 3]
    assert refit["eval_track"][-1]["confusion"] == final_counts(tmp_path / "all", names)


def run_with(track: dict[int, list[list[int]]], kept: int) -> dict:
    return {"choices": {"epochs": {"value": kept, "fix": {"train.stop_at_epoch": kept}}},
            "eval_track": [{"epoch": e, "confusion": c} for e, c in track.items()]}


def test_pooled_epoch_sums_the_folds_and_reads_them_under_the_prior():
    # two folds, two classes; the balanced macro-F1 of the summed counts, by hand:
    # epoch 5: [[8, 2], [1, 1]] -> P0 = .8/(.8+.5) = 8/13, R0 = .8, P1 = .5/.7 = 5/7, R1 = .5
    # epoch 10: [[7, 3], [0, 2]] -> P0 = 1, R0 = .7, P1 = 1/1.3 = 10/13, R1 = 1
    a = run_with({5: [[4, 1], [1, 0]], 10: [[3, 2], [0, 1]]}, kept=5)
    b = run_with({5: [[4, 1], [0, 1]], 10: [[4, 1], [0, 1]]}, kept=5)
    f1 = lambda p, r: 2 * p * r / (p + r)  # noqa: E731
    epoch, scores = pooled_epoch([a, b])
    assert scores[5] == pytest.approx((f1(8 / 13, 0.8) + f1(5 / 7, 0.5)) / 2)
    assert scores[10] == pytest.approx((f1(1, 0.7) + f1(10 / 13, 1)) / 2)
    assert epoch == 10
    # under the training mix (10 : 2) the head's precision counts for what it is: epoch 5 P0 = 8/9, P1 = 1/3
    _, train_mix = pooled_epoch([a, b], np.array([10, 2]) / 12)
    assert train_mix[5] == pytest.approx((f1(8 / 9, 0.8) + f1(1 / 3, 0.5)) / 2)
    # the recipe stops there, and its header says both the pooled figure and the trials' own choices
    settings, lines = fixed_choices([a, b])
    assert settings["train.stop_at_epoch"] == 10
    assert "pooled out-of-fold" in lines[0] and "carve-outs: 5, 5" in lines[0]


def test_pooled_epoch_needs_every_trial_tracked_and_ties_go_to_the_earliest():
    same = {5: [[1, 0], [0, 1]], 10: [[1, 0], [0, 1]], 15: [[1, 0], [0, 1]]}
    assert pooled_epoch([run_with(same, 5), run_with({10: same[10], 15: same[15]}, 10)])[0] == 10  # common only
    untracked = run_with({}, 15)
    assert pooled_epoch([run_with(same, 5), untracked]) is None
    settings, lines = fixed_choices([run_with(same, 5), untracked])
    assert settings["train.stop_at_epoch"] == 5 and "pooled" not in lines[0]  # the trials' lower median
