"""Model selection (train.select) and the tail-protecting carve-out: constructed histories, a
fixture of classes with 1, 2, 3 and 50 samples, and the refit rule through engine.train."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from adpm_dist.config import load_config
from adpm_dist.data.plan import carve_warnings
from adpm_dist.data.validation import carve_quota, carve_validation
from adpm_dist.evaluate import classification_metrics, readout_nll
from adpm_dist.runtime import selection
from adpm_dist.runtime.engine import refit_config
from adpm_dist.runtime.record import stale_keys
from adpm_dist.runtime.selection import Validation

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "digits_lt_tiny.yaml"


def run_rule(rule: str, history: list[Validation]) -> Validation:
    kept = None
    for v in history:
        if selection.keeps(rule, v, kept):
            kept = v
    return kept


def test_ties_go_to_the_lower_validation_nll_not_the_earliest_epoch():
    history = [Validation(5, 0.8, 0.9), Validation(10, 1.0, 0.7), Validation(15, 1.0, 0.4), Validation(20, 1.0, 0.5)]
    assert run_rule("best", history).epoch == 15
    assert run_rule("last", history).epoch == 20
    record = selection.selection_record("best", run_rule("best", history), history)
    assert record["epoch"] == 15 and record["tied_epochs"] == [10, 15, 20] and record["tie_break"] == "val_nll"
    assert "saturates" in selection.saturation_warning(history)  # best = 1.0


def test_a_higher_macro_f1_wins_whatever_its_nll_and_nan_never_wins_a_tie():
    assert selection.is_better(Validation(2, 0.6, 9.0), Validation(1, 0.5, 0.1))
    assert not selection.is_better(Validation(2, 0.5, float("nan")), Validation(1, 0.5, 0.3))
    assert selection.is_better(Validation(2, 0.5, 0.3), Validation(1, 0.5, float("nan")))
    assert selection.saturation_warning([Validation(e, 0.5 + e / 100, 1.0) for e in range(4)]) is None
    assert "saturates" in selection.saturation_warning([Validation(e, 0.7, 1.0) for e in range(5)])


def test_readout_nll_is_the_mean_negative_log_softmax_of_the_label():
    scores = [[0.0, 0.0], [math.log(3.0), 0.0]]
    assert readout_nll(scores, [0, 0]) == pytest.approx((math.log(2) + math.log(4 / 3)) / 2)


def test_carve_out_never_takes_a_fifth_or_the_last_two_samples_of_a_class():
    assert [carve_quota(n, fraction=0.15) for n in (1, 2, 3, 4, 5, 50)] == [0, 0, 0, 0, 1, 8]
    sizes = {0: 1, 1: 2, 2: 3, 3: 50}
    samples = [(f"c{c}_{i:02d}", c, f"g{c}_{i}") for c, n in sizes.items() for i in range(n)]
    val = carve_validation(samples, 0.15, seed=0)
    per_class = {c: sum(k.startswith(f"c{c}_") for k in val) for c in sizes}
    assert per_class == {0: 0, 1: 0, 2: 0, 3: 8}
    rows = [SimpleNamespace(key=k, label=c) for k, c, _ in samples]
    (warning,) = carve_warnings(["one", "two", "three", "fifty"], rows, val)
    assert "one, two, three" in warning and "fifty" not in warning
    # an explicit, more generous policy still keeps min_train samples
    val = carve_validation(samples, 0.5, seed=0, max_share=0.9, min_train=2)
    assert sum(k.startswith("c2_") for k in val) == 1 and sum(k.startswith("c3_") for k in val) == 25


def test_validation_macro_f1_averages_over_the_classes_validation_has():
    labels, preds = [0, 0, 1], [0, 0, 1]
    assert classification_metrics(labels, preds, ["a", "b", "c"])["macro_f1"] == pytest.approx(2 / 3)
    assert classification_metrics(labels, preds, ["a", "b", "c"], present_only=True)["macro_f1"] == 1.0


def test_refit_trains_again_on_train_and_validation_for_the_chosen_epochs(digits_shards, tmp_path):
    from adpm_dist.runtime.engine import train

    out = tmp_path / "refit"
    cfg = load_config(TINY, [f"data.shards={digits_shards}", f"run.output_dir={out}", "method=ce",
                             "train.select=refit", "train.epochs=2"])
    metrics = train(cfg)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["selection"]["rule"] == "refit" and saved["selection"]["refit_epochs"] in (1, 2)
    assert saved["selection"]["refit_parts"] == ["train", "val"]  # the balanced val part joins training
    carved = refit_config(load_config(TINY, ["data.val_part=carve"]), 3, ["train"])
    assert carved.data.train_parts == ["train"] and carved.data.val_part == "none"  # digits' val part stays out
    assert len(saved["history"]) == saved["selection"]["refit_epochs"]  # the refit pass: that many epochs
    assert all("val_macro_f1" not in row for row in saved["history"])  # no validation data left to score
    assert (out / "selection" / "checkpoints" / "best.pt").is_file()  # the first pass, kept apart
    header = (out / "selection" / "summary.csv").read_text().splitlines()[0].split(",")
    assert "val_macro_f1" in header and "val_prior_macro_f1" not in header  # a baseline has no separate prior
    assert load_config(out / "config.yaml").train.select == "refit"  # what was asked: what reusers compare
    assert load_config(out / "refit_config.yaml").data.val_part == "none"
    assert stale_keys(out, cfg) == []
    assert not (out / "selection" / "metrics.json").exists()  # ... and never evaluated on the test part
    assert metrics["macro_f1"] == saved["macro_f1"]


def test_plateau_stops_only_after_patience_validations_without_a_relative_gain():
    improving = [1.0, 0.8, 0.6, 0.5]
    assert not selection.plateaued(improving, patience=2, min_delta=0.01)
    flat = [1.0, 0.8, 0.795, 0.81]  # 0.795 is < 1 % under 0.8: no real gain twice in a row
    assert selection.plateaued(flat, patience=2, min_delta=0.01)
    assert not selection.plateaued(flat, patience=2, min_delta=0.0)  # any gain counts: 0.795 < 0.8
    assert not selection.plateaued(flat, patience=0, min_delta=0.01)  # off
    assert not selection.plateaued([1.0, 1.0], patience=2, min_delta=0.01)  # nothing before the window
    assert selection.plateaued([math.nan, 1.0, 1.2, 1.1], patience=2, min_delta=0.0)  # NaN (warm-up) ignored


def test_a_run_stops_on_its_validation_loss_records_it_and_a_resume_trains_no_further(digits_shards, tmp_path):
    from adpm_dist.runtime.engine import train

    out = tmp_path / "stop"
    overrides = [f"data.shards={digits_shards}", f"run.output_dir={out}", "train.epochs=6",
                 "train.stop_patience=1", "train.stop_min_delta=0.99"]  # any gain under 99 % is "no gain"
    train(load_config(TINY, overrides))
    saved = json.loads((out / "metrics.json").read_text())
    sel = saved["selection"]
    # warm-up epoch 1, validations at 2 and 3: the second cannot gain 99 %, so training stops at epoch 3 of 7
    assert sel["stopped"] == {"epoch": 3, "loss": "val_diffusion", "patience": 1, "min_delta": 0.99}
    assert [row["epoch"] for row in saved["history"]] == [1, 2, 3]
    assert all(row["val_diffusion"] > 0 for row in saved["history"] if "val_macro_f1" in row)
    assert [v["loss"] for v in sel["history"]] == [row["val_diffusion"] for row in saved["history"][1:]]
    # per-sample validation NLL of the kept epoch by class: the noise-law fit's input
    assert set(sel["val_class_losses"]) <= set(saved["train_counts"]) and sel["val_class_losses"]
    assert all(x >= 0 for losses in sel["val_class_losses"].values() for x in losses)
    again = train(load_config(TINY, overrides + ["train.resume=auto"]))
    assert [row["epoch"] for row in again["history"]] == [1, 2, 3]  # stopped runs stay stopped


def test_still_rising_needs_a_real_gain_at_the_end():
    from adpm_dist.runtime.selection import still_rising

    h = lambda *v: [{"epoch": i + 1, "macro_f1": x} for i, x in enumerate(v)]  # noqa: E731
    assert still_rising(h(0.5, 0.7, 0.8))
    assert not still_rising(h(0.5, 0.92, 0.92))      # a tie at the end: annealed, not still improving
    assert not still_rising(h(0.5, 0.872, 0.879))    # under the 0.01 margin
    assert not still_rising(h(0.9, 0.8)) and not still_rising(h(0.9))


def test_stop_at_epoch_trains_exactly_the_full_runs_first_epochs(digits_shards, tmp_path, one_torch_thread):
    """train.stop_at_epoch ends the loop, not the schedule: epochs 1..k are the full run's, weights and LR
    alike (a shorter train.epochs would compress the cosine: another model than the one validated)."""
    import torch

    from adpm_dist.config import ConfigError
    from adpm_dist.runtime.checkpoint import load_checkpoint, validated_checkpoints
    from adpm_dist.runtime.engine import train

    base = [f"data.shards={digits_shards}", "method=ce", "train.epochs=3", "train.warmup_epochs=1",
            "train.val_every=1", "train.keep_validated=true"]
    full = train(load_config(TINY, base + [f"run.output_dir={tmp_path / 'full'}"]))
    stop = train(load_config(TINY, base + [f"run.output_dir={tmp_path / 'stop'}", "train.stop_at_epoch=2"]))
    short = train(load_config(TINY, base[:2] + ["train.epochs=2", *base[3:], f"run.output_dir={tmp_path / 'short'}"]))
    assert [row["epoch"] for row in stop["history"]] == [1, 2] and stop["choices"]["epochs"]["value"] <= 2
    timing = {"images_per_s", "step_time_s", "max_mem_mb", "val_time_s"}
    maths = [[{k: v for k, v in row.items() if k not in timing} for row in run["history"]] for run in (full, stop)]
    assert maths[1] == maths[0][:2]  # losses, LR and validation figures, bit for bit
    assert short["history"][1]["lr"] != full["history"][1]["lr"]  # the compressed schedule is another one
    weights = [load_checkpoint(validated_checkpoints(tmp_path / run / "checkpoints")[1])["model"]
               for run in ("full", "stop")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert stop["choices"]["epochs"]["fix"] == {"train.stop_at_epoch": stop["choices"]["epochs"]["value"]}
    with pytest.raises(ConfigError, match=r"train.stop_at_epoch=4: past the run's last epoch \(3\)"):
        train(load_config(TINY, base + [f"run.output_dir={tmp_path / 'past'}", "train.stop_at_epoch=4"]))
