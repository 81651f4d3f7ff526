"""`tune/search_noise.py --fit` (adpm_dist/tune/fit_*.py): the noise law fitted per fold instead of searched.

The end-to-end test runs both phases on a loopback Ray cluster in its own process session, as
tests/test_tune_ray.py does (its helpers are reused), on 2 digits-LT folds with tiny training.
"""
from __future__ import annotations

import csv
import json
import sys
import time

import pytest
from process_group import run_session
from test_tune_ray import FAST, ROOT, ray_env, ray_tmp, run_search  # noqa: F401  (ray_tmp: a fixture)

from adpm_dist.config import ConfigError, load_config
from adpm_dist.tune.fit_plan import FitTrial, check_fit_overrides


def fit_cmd(out, ray_dir, *extra: str) -> list[str]:
    return [sys.executable, "tune/search_noise.py", "--dataset", "digits_lt", "--fit", "--folds", "2",
            "--fit-boot", "50", "--output", str(out), "--config", "configs/digits_lt_tiny.yaml",
            "--progress-interval", "30", "--ray-temp-dir", str(ray_dir), *extra, *FAST]


@pytest.mark.timeout(420)
def test_fit_end_to_end(tmp_path, ray_tmp):  # noqa: F811
    out = tmp_path / "exp"
    start = time.monotonic()
    res = run_search(fit_cmd(out, ray_tmp), ray_env(tmp_path), timeout=360)
    print(f"--fit, 2 folds x 2 phases: {time.monotonic() - start:.0f} s")
    assert res.returncode == 0, res.stdout[-4000:]
    for name in ("noise_fit.json", "noise_fit.png", "cv_results.csv", "summary.md", "protocol.json"):
        assert (out / name).is_file(), name
    data = json.loads((out / "noise_fit.json").read_text())
    assert [f["fold"] for f in data["fits"]] == [0, 1]
    for f in data["fits"]:
        assert {"alpha", "beta", "c", "intervals", "r2", "eq14", "train_counts", "mean_losses"} <= set(f), f
        prior = json.loads((out / "trials" / f"prior_fold{f['fold']}" / "metrics.json").read_text())
        assert prior["method"] == "prior" and f["train_counts"] == {c: prior["train_counts"][c] for c in f["classes"]}
        fitted = load_config(out / "trials" / f"fitted_fold{f['fold']}" / "config.yaml")
        assert fitted.method == "adpm" and fitted.noise.formula == f["eq14"]["noise.formula"]
        assert fitted.noise.alpha == pytest.approx(f["eq14"]["noise.alpha"])
        assert fitted.data.eval_part == f"fold{f['fold']}" and f"fold{f['fold']}" not in fitted.data.train_parts
    assert data["cost"]["prior"]["trials"] == 2 and data["cost"]["fitted"]["trials"] == 2
    assert data["cost"]["prior"]["wall_s"] > 0 and data["results"]["macro_f1"]["folds"] == 2
    rows = list(csv.DictReader(open(out / "cv_results.csv")))
    assert [(r["fold"], r["status"]) for r in rows] == [("0", "done"), ("1", "done")]
    assert all(e["independent"] for e in json.loads((out / "protocol.json").read_text()))
    assert "## Estimate: macro-F1, mean ± std over 2/2 folds" in (out / "summary.md").read_text()
    assert "macro-F1 at the fitted noise law" in res.stdout

    again = run_search(fit_cmd(out, ray_tmp, "--resume"), ray_env(tmp_path), timeout=240)
    assert again.returncode == 0, again.stdout[-4000:]
    assert again.stdout.count("0 of 2 trial(s) to run") == 2  # both phases reused: the fit is deterministic


def test_fit_refuses_grid_options_and_reserved_keys():
    for extra in (["--alphas", "0,1/6"], ["--betas", "5"], ["--early-stop"]):
        res = run_session([sys.executable, "tune/search_noise.py", "--dataset", "digits_lt", "--fit", *extra],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and "--fit fits alpha and beta per fold" in res.stderr, res.stderr
    for key in ("noise.formula=B", "method=ce", "noise.alpha=0.5", "data.eval_part=fold1"):
        with pytest.raises(ConfigError, match=key.partition("=")[0]):
            check_fit_overrides([key])
    check_fit_overrides(["train.epochs=1", "noise.apply=variance"])


def test_fit_trial_names_and_parts():
    t = FitTrial("prior", 2)
    assert t.id == "prior_fold2" and t.eval_part == "fold2" and t.train_folds(4) == ["fold0", "fold1", "fold3"]
    assert FitTrial("fitted", 0).to_dict()["outer"] is None


def test_consolidate_leaves_out_a_fold_trained_at_another_law(tmp_path):
    """--consolidate-only refits phase 1; a phase-2 score trained at another law is reported, not averaged."""
    import yaml
    from test_tune_consolidate import TINY, fake_metrics

    from adpm_dist.tune.experiment import SearchSpec
    from adpm_dist.tune.fit_law import fit_folds
    from adpm_dist.tune.fit_plan import plan_fit
    from adpm_dist.tune.fit_summary import consolidate_fit

    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text(json.dumps({"parts": {"fold0": {}, "fold1": {}, "test": {}}}))
    spec = SearchSpec(dataset="digits_lt", config=TINY, output=str(tmp_path / "exp"), folds=2)
    search = plan_fit(spec, shards, 2, resume=False, n_boot=20)
    out = search.out
    (out / "search.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "search.json").write_text(json.dumps(search.manifest()))
    counts = {"head": 100, "mid": 30, "tail": 10}
    for k in range(2):  # phase 1: losses on the law 2 n^-0.5 + 0.1 (+ fold-dependent noise)
        losses = {c: [2 * n ** -0.5 + 0.1 + 0.01 * (k + i) for i in range(4)] for c, n in counts.items()}
        prior = trial_dir_of(out, f"prior_fold{k}")
        (prior / "metrics.json").write_text(json.dumps({"selection": {"val_class_losses": losses},
                                                        "train_counts": counts}))
    fits = fit_folds(out, 2, 20)
    for k, f1 in ((0, 0.8), (1, 0.6)):  # phase 2: fold 0 at its fitted law, fold 1 at an older one
        fitted = trial_dir_of(out, f"fitted_fold{k}")
        noise = {key.split(".")[1]: v for key, v in fits[k]["eq14"].items()}
        if k == 1:
            noise["alpha"] = noise["alpha"] + 0.25
        (fitted / "config.yaml").write_text(yaml.safe_dump({"noise": noise}))
        (fitted / "metrics.json").write_text(json.dumps(fake_metrics(f1, k)))
    report = consolidate_fit(out, 20)
    assert sorted(report["estimate"].folds) == [0]  # only fold 0's score belongs to the law fitted now
    assert [r["source_trial"] for r in report["missing"]] == ["fitted_fold1"]
    assert report["missing"][0]["status"].startswith("trained at another law: noise.alpha trained")
    assert "mean ± std over 1/2 folds" in (out / "summary.md").read_text()


def trial_dir_of(out, trial_id: str):
    path = out / "trials" / trial_id
    path.mkdir(parents=True, exist_ok=True)
    return path
