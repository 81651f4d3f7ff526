"""benchmarks/fit_vs_grid.py on a synthetic grid and --fit experiment with known per-fold numbers."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_tune_consolidate import experiment, fake_metrics  # noqa: F401  (experiment: a fixture)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import fit_vs_grid  # noqa: E402

FITTED_F1 = [0.75, 0.71, 0.73]


def fit_law(fold: int) -> dict:
    return {"fold": fold, "alpha": 0.4, "beta": 2.0, "c": 0.1, "r2": 0.83, "n_boot": 50, "level": 0.9,
            "intervals": {"alpha": [0.2, 0.9], "beta": [1.0, 3.0], "c": [0.0, 0.2]},
            "eq14": {"noise.formula": "B", "noise.alpha": 0.4, "noise.beta": 20.0}, "verdict": "follows eq. 7"}


@pytest.fixture()
def fit_dir(tmp_path, experiment):  # noqa: F811
    """A --fit experiment on the grid's folds: fold k scores FITTED_F1[k]; the fit took 2 + 4 minutes."""
    out = tmp_path / "fit"
    search = json.loads((experiment / "search.json").read_text()) | {"mode": "fit"}
    (out / "trials").mkdir(parents=True)
    (out / "search.json").write_text(json.dumps(search))
    for k, f1 in enumerate(FITTED_F1):
        (out / "trials" / f"fitted_fold{k}").mkdir()
        (out / "trials" / f"fitted_fold{k}" / "metrics.json").write_text(json.dumps(fake_metrics(f1, k)))
        noise = {key.split(".")[1]: v for key, v in fit_law(k)["eq14"].items()}  # trained at the fitted law
        (out / "trials" / f"fitted_fold{k}" / "config.yaml").write_text(json.dumps({"noise": noise}))
    cost = {"prior": {"trials": 3, "wall_s": 120.0}, "fitted": {"trials": 3, "wall_s": 240.0}}
    (out / "noise_fit.json").write_text(json.dumps({"fits": [fit_law(k) for k in range(3)], "cost": cost}))
    for d in (experiment / "trials").iterdir():  # the grid's trials started a known time apart
        (d / "attempts.jsonl").write_text(json.dumps({"attempt": 1, "started": "2026-12-02 10:00:00"}) + "\n")
    return out


def test_section_scores_costs_and_differences(fit_dir, experiment, tmp_path):  # noqa: F811
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n")
    argv = ["--fit-dir", str(fit_dir), "--grid-dir", str(experiment), "--results", str(results)]
    assert fit_vs_grid.main(argv) == 0
    text = results.read_text()
    assert text.count(fit_vs_grid.BEGIN) == 1 and fit_vs_grid.HEADING in text
    # fitted: mean 0.73, sample std 0.02 over 3 folds; 6 trials in 6 minutes
    assert "| fitted law per fold (`--fit`) | 3 | 0.730 ± 0.020 |" in text and "| 6 | 6 min |" in text
    # the grid's best complete cell is (1/6, 5) at 0.72 +- 0.02 (the fixture's (1/2, 5) misses a fold)
    assert "grid best: alpha 1/6, beta 5" in text and "0.720 ± 0.020" in text
    assert "| grid, alpha 0 (isotropic) | 3 | 0.620 ± 0.020 |" in text
    # fold by fold: 0.75-0.70, 0.71-0.72, 0.73-0.74
    assert "- grid best: 0.010 ± 0.035 (+0.050, -0.010, -0.010)" in text
    assert "- isotropic: 0.110 ± 0.035" in text and "the paper's point:" not in text  # it is the best cell
    assert "| 0 | 0.4 [0.2, 0.9] | 2 [1, 3] | 0.1 [0, 0.2] | 0.83 | B, beta 20, alpha 0.4 | follows eq. 7 |" in text
    assert fit_vs_grid.main(argv) == 0 and results.read_text().count(fit_vs_grid.BEGIN) == 1  # replaced, not appended


def test_refuses_searches_that_differ(fit_dir, experiment):  # noqa: F811
    search = json.loads((fit_dir / "search.json").read_text())
    (fit_dir / "search.json").write_text(json.dumps(search | {"folds": 5}))
    with pytest.raises(SystemExit, match="differ in folds"):
        fit_vs_grid.main(["--fit-dir", str(fit_dir), "--grid-dir", str(experiment), "--no-write"])
    with pytest.raises(SystemExit, match="not 'fit'"):
        fit_vs_grid.main(["--fit-dir", str(experiment), "--grid-dir", str(experiment), "--no-write"])


def test_refuses_searches_on_different_folds(fit_dir, experiment, tmp_path):  # noqa: F811
    other = tmp_path / "other_shards"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"parts": {"fold0": {"n": 1}}}))
    search = json.loads((fit_dir / "search.json").read_text())
    (fit_dir / "search.json").write_text(json.dumps(search | {"shards": str(other)}))
    with pytest.raises(SystemExit, match="different folds"):
        fit_vs_grid.main(["--fit-dir", str(fit_dir), "--grid-dir", str(experiment), "--no-write"])
