"""The consolidating evaluator on a synthetic experiment with known per-fold numbers (no training, no Ray)."""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from adpm_dist.config import load_config
from adpm_dist.tune.consolidate import consolidate
from adpm_dist.tune.experiment import trial_dir, write_search
from adpm_dist.tune.grid import GridSpec
from adpm_dist.tune.grid import plan_search

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs/digits_lt_tiny.yaml")
CLASSES = ["head", "mid", "tail"]


def fake_metrics(f1: float, fold: int) -> dict:
    """A metrics.json as engine.train writes it: macro-F1 `f1` (tail f1 - 0.1, others f1 + 0.05), accuracy f1 + 0.1
    (at most 1: consolidation refuses a score outside [0, 1])."""
    per_class = {name: {"precision": f1, "recall": v, "f1": v, "support": n}
                 for name, v, n in (("head", f1 + 0.05, 50), ("mid", f1 + 0.05, 20), ("tail", f1 - 0.1, 5))}
    block = {"accuracy": min(f1 + 0.1, 1.0), "macro_f1": f1, "macro_precision": f1, "macro_recall": f1,
             "balanced_accuracy": f1, "n_samples": 75, "per_class": per_class}
    prior = json.loads(json.dumps(block)) | {"macro_f1": f1 - 0.1, "accuracy": f1}
    return block | {"prior": prior, "eval_part": f"fold{fold}", "best_epoch": 3, "val_macro_f1": f1,
                    "noise_levels": {"head": 1.0, "mid": 1.2, "tail": 1.5},
                    "train_counts": {"head": 100, "mid": 40, "tail": 10}}


@pytest.fixture()
def experiment(tmp_path):
    """alphas {0, 1/6, 1/2} x betas {1, 5} x 3 folds; 1/2 with beta 5 lacks fold 2 (failed)."""
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text(json.dumps({"parts": {"fold0": {}, "fold1": {}, "fold2": {}, "test": {}}}))
    spec = GridSpec(dataset="digits_lt", config=TINY, output=str(tmp_path / "exp"), alphas=[0, 1 / 6, 0.5],
                      betas=[1, 5], folds=3, overrides=["train.epochs=1"])
    search = plan_search(spec, shards, 3, resume=False)
    write_search(search)
    f1 = {(0, 1): [0.60, 0.62, 0.64], (1 / 6, 1): [0.64, 0.66, 0.68], (1 / 6, 5): [0.70, 0.72, 0.74],
          (0.5, 1): [0.66, 0.68, 0.70], (0.5, 5): [0.90, 0.95]}  # best mean, but only 2 of 3 folds
    for t in search.trials:
        d = trial_dir(search.out, t)
        d.mkdir(parents=True)
        values = f1[(t.alpha, t.beta)]
        if t.fold < len(values):
            (d / "metrics.json").write_text(json.dumps(fake_metrics(values[t.fold], t.fold)))
        else:
            (d / "attempts.jsonl").write_text('{"attempt": 1}\n')
    return search.out


def test_tables_and_best(experiment):
    report = consolidate(experiment)
    best = report["best"]
    # 1/2,5 has the highest mean but misses a fold: the best complete one is 1/6,5.
    assert (best.alpha, best.beta) == (1 / 6, 5) and report["complete"]
    assert best.mean("macro_f1") == pytest.approx(0.72)
    assert best.std("macro_f1") == pytest.approx(np.std([0.70, 0.72, 0.74], ddof=1))
    assert best.mean("accuracy") == pytest.approx(0.82) and best.mean("macro_f1", prior=True) == pytest.approx(0.62)
    assert best.per_class("f1", "tail").mean() == pytest.approx(0.62)

    with open(experiment / "cv_results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 * 3  # every grid cell, alpha = 0 beta = 5 included
    alpha0_b5 = [r for r in rows if r["alpha_label"] == "0" and r["beta_label"] == "5"]
    assert all(r["source_trial"] == f"alpha0_beta1_fold{r['fold']}" and r["status"] == "done" for r in alpha0_b5)
    assert [float(r["macro_f1"]) for r in alpha0_b5] == [0.60, 0.62, 0.64]  # copied from beta = 1
    failed = [r for r in rows if r["status"] != "done"]
    assert [(r["alpha_label"], r["beta_label"], r["fold"], r["status"]) for r in failed] == [("1/2", "5", "2", "failed")]
    assert {"f1_tail", "prior_macro_f1", "val_macro_f1"} <= set(rows[0])

    md = (experiment / "summary.md").read_text()
    assert "| alpha \\ beta | 1 | 5 |" in md
    assert "| 0 | 0.620 ± 0.020 | 0.620 ± 0.020 |" in md  # constant alpha = 0 row
    assert "**0.720 ± 0.020**" in md and "0.925 ± 0.035 (2/3)" in md
    assert "mean macro-F1 over the CV folds' evaluation parts" in md and "never used by the search" in md
    assert "only beta = 1 was trained" in md
    # Per-class table of the best (Tables 5/7): train n, lambda, support summed over folds, F1, recall, alpha=0, prior.
    assert "| tail | 10 | 1.500 | 15 | 0.620 ± 0.020 | 0.620 ± 0.020 | 0.520 ± 0.020 | 0.620 ± 0.020 |" in md
    assert (experiment / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    cfg = load_config(experiment / "best.yaml")  # ready for launch/train.py
    assert (cfg.noise.alpha, cfg.noise.beta) == (1 / 6, 5)
    assert cfg.data.eval_part == "test" and cfg.data.train_parts == [] and cfg.train.epochs == 1
    assert cfg.run.output_dir == str(experiment / "best_run")


def test_ties_go_to_the_smaller_alpha(tmp_path, experiment):
    for d in (experiment / "trials").iterdir():  # every trial scores the same
        if (d / "metrics.json").is_file():
            fold = int(d.name[-1])
            (d / "metrics.json").write_text(json.dumps(fake_metrics(0.5, fold)))
    best = consolidate(experiment)["best"]
    assert (best.alpha, best.beta) == (0, 1)


def test_consolidate_only_cli(experiment, capsys):
    spec = importlib.util.spec_from_file_location("search_noise", ROOT / "tune/search_noise.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    (experiment / "summary.md").unlink(missing_ok=True)
    assert cli.main(["--dataset", "digits_lt", "--output", str(experiment), "--consolidate-only"]) == 0
    out = capsys.readouterr().out
    assert "best: alpha=1/6 beta=5" in out and (experiment / "summary.md").is_file()
    assert cli.main(["--dataset", "digits_lt", "--output", str(experiment / "nothing"), "--consolidate-only"]) == 2


@pytest.fixture()
def nested_experiment(tmp_path):
    """Fold-only shards (no `test`): alphas {0, 1/2} x beta 5 x 3 folds, nested. Known scores:

    CV trials (trained without fold k, scored on fold k): alpha 0 -> 0.50 + 0.01 k, alpha 1/2 -> 0.60 + 0.01 k.
    Inner trials of outer fold k: alpha 1/2 wins the inner CV for outer folds 0 and 1, alpha 0 for outer fold 2.
    """
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text(json.dumps({"parts": {"fold0": {}, "fold1": {}, "fold2": {}}}))
    spec = GridSpec(dataset="pad_ufes", config=TINY, output=str(tmp_path / "exp"), alphas=[0, 0.5], betas=[5],
                      overrides=["train.epochs=1"])
    search = plan_search(spec, shards, 3, resume=False)
    assert search.protocol == "nested"
    write_search(search)
    for t in search.trials:
        if t.outer is None:
            f1 = (0.50 if t.alpha == 0 else 0.60) + 0.01 * t.fold
        else:
            f1 = 0.8 if (t.alpha == 0) == (t.outer == 2) else 0.7
        d = trial_dir(search.out, t)
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(fake_metrics(f1, t.fold)))
    return search.out


def test_nested_estimate_and_protocol(nested_experiment):
    report = consolidate(nested_experiment)
    assert report["protocol"] == "nested"
    choices = [(o.fold, o.choice.alpha, o.source.id) for o in report["outer_folds"]]
    assert choices == [(0, 0.5, "alpha1-2_beta5_fold0"), (1, 0.5, "alpha1-2_beta5_fold1"), (2, 0, "alpha0_beta5_fold2")]
    outer_scores = [0.60, 0.61, 0.52]  # each choice's CV trial on its own outer fold
    assert report["estimate"].mean("macro_f1") == pytest.approx(np.mean(outer_scores))
    assert report["estimate"].std("macro_f1") == pytest.approx(np.std(outer_scores, ddof=1))

    md = (nested_experiment / "summary.md").read_text()
    assert "nested 3-fold cross-validation" in md and "## Estimate: nested CV" in md
    assert f"**{np.mean(outer_scores):.3f} ± {np.std(outer_scores, ddof=1):.3f}**" in md
    assert "Cross-validated selection table (optimistic)" in md
    assert "## Best:" not in md and "never used by the search" not in md  # no optimistic headline figure
    header = (nested_experiment / "best.yaml").read_text()
    assert "is NOT an estimate" in header and f"{np.mean(outer_scores):.3f}" in header

    with open(nested_experiment / "cv_results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 3 + 3 * 2 * 2  # CV trials, then inner trials of every outer fold
    assert all(r["fold"] != r["outer"] for r in rows)


def test_protocol_json_never_scores_on_a_selection_part(nested_experiment):
    """Fold-only shards: every reported figure's selection and evaluation parts are disjoint."""
    consolidate(nested_experiment)
    figures = json.loads((nested_experiment / "protocol.json").read_text())
    by_name = {f["figure"]: f for f in figures}
    assert len(by_name) == len(figures) and len(figures) > 0
    leaves = [f for f in figures if "mean_of" not in f]
    for f in leaves:
        assert f["selected_on"] and f["evaluated_on"], f
        assert not set(f["selected_on"]) & set(f["evaluated_on"]), f
        assert not set(f["trained_on"]) & set(f["evaluated_on"]), f
        assert f["independent"]
    for f in figures:
        if "mean_of" in f:  # a mean over folds: each component is one of the figures above
            assert f["mean_of"] and all(n in by_name and "mean_of" not in by_name[n] for n in f["mean_of"]), f
    outer = [f for f in leaves if "nested CV estimate, outer fold" in f["figure"]]
    assert [(f["selected_on"], f["evaluated_on"]) for f in outer] == [
        (["fold1", "fold2"], ["fold0"]), (["fold0", "fold2"], ["fold1"]), (["fold0", "fold1"], ["fold2"])]
    estimate = [f for f in figures if f["figure"].startswith("summary.md nested CV estimate: mean")]
    assert len(estimate) == 1 and estimate[0]["mean_of"] == [f["figure"] for f in outer]


def test_held_out_protocol_flags_the_optimistic_best(experiment):
    consolidate(experiment)
    figures = json.loads((experiment / "protocol.json").read_text())
    best = [f for f in figures if f["figure"].startswith("summary.md Best")]
    assert len(best) == 1 and not best[0]["independent"] and "optimistic" in best[0]["note"]
    assert all(f["independent"] for f in figures if f is not best[0])


def test_partial_nested_estimate_is_loud_and_exits_nonzero(nested_experiment, capsys):
    """Issue 25 item 5: one CV trial's metrics.json missing -> the estimate covers 2 of 3 outer folds, which
    summary.md and the CLI must call partial, and --consolidate-only must not exit 0."""
    spec = importlib.util.spec_from_file_location("search_noise", ROOT / "tune/search_noise.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    (nested_experiment / "trials" / "alpha1-2_beta5_fold0" / "metrics.json").unlink()
    assert cli.main(["--dataset", "pad_ufes", "--output", str(nested_experiment), "--consolidate-only"]) == 1
    captured = capsys.readouterr()
    assert "publish this" not in captured.out and "PARTIAL" in captured.out and "2/3 outer folds" in captured.out
    assert "PARTIAL ESTIMATE" in captured.err and "outer fold 0" in captured.err
    assert (nested_experiment / "summary.md").read_text().startswith("> **PARTIAL ESTIMATE")


def test_report_compare_uses_the_reported_configuration(nested_experiment):
    """Issue 25 item 5: compare EXPERIMENT_DIR takes the runs behind the figure the protocol reports (nested:
    the outer folds' selected runs, not the 12 inner trials and every grid point pooled) and says which."""
    from adpm_dist.report.compare import collect_methods, compare

    method = collect_methods([nested_experiment], include_prior=False)[0]
    assert sorted(r.name for r in method.runs) == ["alpha0_beta5_fold2", "alpha1-2_beta5_fold0", "alpha1-2_beta5_fold1"]
    assert np.mean([m["macro_f1"] for m in method.metrics]) == pytest.approx(np.mean([0.60, 0.61, 0.52]))
    assert "nested CV estimate's outer-fold runs" in compare([nested_experiment], include_prior=False)


def test_report_compare_of_a_held_out_search_takes_its_best(experiment):
    from adpm_dist.report.compare import collect_methods

    held_out = collect_methods([experiment], include_prior=False)[0]
    assert sorted(r.name for r in held_out.runs) == [f"alpha1-6_beta5_fold{k}" for k in range(3)]
