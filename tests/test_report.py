"""Run report, comparison tables, reverse-chain t-SNE and prediction, on synthetic run directories
(fast) and on one really trained tiny run (engine.train on configs/digits_lt_tiny.yaml, shared by
the tests at the bottom of this module)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from adpm_dist.config import load_config
from adpm_dist.runtime.sampling import write_predictions
from adpm_dist.evaluate import classification_metrics
from adpm_dist.methods import build_model
from adpm_dist.report import compare, find_runs, load_run, write_report
from adpm_dist.report.__main__ import main as report_main
from adpm_dist.report.compare import thirds
from adpm_dist.report.tsne import trace_reverse_chain

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["head", "mid", "tail"]
FIGURES = ("confusion_matrix.png", "per_class_f1.png", "reliability.png", "training_history.png")


def fake_run(path: Path, seed: int, *, prior_columns: bool = True, counts=(300, 60, 6)) -> Path:
    """A run directory as engine.train leaves it, from random predictions (no model involved)."""
    rng = np.random.default_rng(seed)
    n = 90
    labels = rng.integers(0, 3, n)
    y0 = rng.normal(size=(n, 3)) + 2.0 * np.eye(3)[labels] * (rng.random((n, 1)) < 0.7)
    prior = rng.dirichlet(np.ones(3), size=n)
    pred = {"keys": [f"k{i:03d}" for i in range(n)], "labels": labels, "scores": y0, "prior": prior}
    path.mkdir(parents=True)
    write_predictions(path / "predictions.csv", pred, NAMES)
    metrics = classification_metrics(labels, y0.argmax(1), NAMES)
    metrics["prior"] = classification_metrics(labels, prior.argmax(1), NAMES)
    metrics.update(eval_part="fold0", best_epoch=3, val_macro_f1=0.5, sampler="truncated", sampling_steps=20,
                   noise_levels={"head": 1.0, "mid": 1.2, "tail": 1.5}, train_counts=dict(zip(NAMES, counts)),
                   history=[{"epoch": 1, "phase": "prior warm-up", "loss": 2.0, "prior_ce": 2.0},
                            {"epoch": 2, "phase": "joint", "loss": 1.5, "diffusion": 0.9, "prior_ce": 0.6,
                             "val_macro_f1": 0.4, "val_prior_macro_f1": 0.45}])
    (path / "metrics.json").write_text(json.dumps(metrics))
    if not prior_columns:  # a run written before predictions.csv carried the prior's probabilities
        with open(path / "predictions.csv") as f:
            rows = list(csv.reader(f))
        keep = [i for i, h in enumerate(rows[0]) if not h.startswith("prior_p_")]
        (path / "predictions.csv").write_text("\n".join(",".join(r[i] for i in keep) for r in rows) + "\n")
    return path


# ---------------------------------------------------------------- run report (synthetic runs)

def test_load_run_reads_what_engine_writes(tmp_path):
    run = load_run(fake_run(tmp_path / "r", 0))
    assert run.class_names == NAMES and run.probs.shape == (90, 3) and run.prior_probs.shape == (90, 3)
    assert np.allclose(run.probs.sum(1), 1, atol=1e-5)
    assert np.array_equal(run.predictions, run.probs.argmax(1))
    assert run.train_counts() == [300, 60, 6]


def test_write_report_files_and_numbers(tmp_path):
    run_dir = fake_run(tmp_path / "r", 1)
    path = write_report(run_dir)
    assert path == run_dir / "report.md"
    for name in FIGURES:
        with Image.open(run_dir / name) as im:
            assert im.format == "PNG" and im.size[0] > 300
    text = path.read_text()
    run = load_run(run_dir)
    auc = roc_auc_score(run.labels, run.probs, multi_class="ovr")
    prior_auc = roc_auc_score(run.labels, run.prior_probs, multi_class="ovr")
    headline = [line for line in text.splitlines() if line.startswith("| ADPM (diffusion)")][0]
    assert f"{run.metrics['accuracy']:.3f}" in headline and f"{auc:.3f}" in headline
    prior_line = [line for line in text.splitlines() if line.startswith("| prior network")][0]
    assert f"{prior_auc:.3f}" in prior_line
    # per-class rows are ordered head to tail by training count
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "train n" not in line]
    assert [r for r in rows if r in NAMES] == NAMES
    for name in FIGURES:
        assert f"]({name})" in text
    assert "tsne.png" not in text.split("t-SNE of the reverse chain:")[0]


def baseline_run(path: Path, seed: int, *, recorded: bool = True) -> Path:
    """A logit-adjustment run as the engine writes it: no prior columns, no noise levels, its "prior"
    block a copy of itself. ``recorded=False``: an older run (no has_diffusion, prior columns repeated)."""
    run_dir = fake_run(path, seed)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics |= {"method": "logit_adjusted", "noise_levels": {}, "prior": {k: v for k, v in metrics.items()}}
    if recorded:
        metrics["has_diffusion"] = False
        run = load_run(run_dir)
        pred = {"keys": run.keys, "labels": run.labels, "scores": np.log(run.probs), "prior": run.probs}
        write_predictions(run_dir / "predictions.csv", pred, NAMES, prior=False)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


@pytest.mark.parametrize("recorded", [True, False])
def test_report_of_a_baseline_run_is_method_neutral(tmp_path, recorded):
    from adpm_dist.evaluate import format_table

    run_dir = baseline_run(tmp_path / "la", 3, recorded=recorded)
    text = write_report(run_dir).read_text()
    assert "| logit-adjusted loss |" in text and "ADPM (diffusion)" not in text
    for absent in ("prior network", "prior F1", "lambda", "Sampler", "softmax(y0)", "t-SNE", "noise:"):
        assert absent not in text, absent
    table = format_table(json.loads((run_dir / "metrics.json").read_text()))
    assert "ADPM" not in table and "prior" not in table and "nan" not in table and "lambda" not in table
    comparison = compare([run_dir, fake_run(tmp_path / "adpm", 4)], labels=["LA", "ADPM"])
    assert "| prior network (ADPM)" in comparison and "prior network (LA)" not in comparison


def test_validation_without_a_predicted_class_does_not_warn():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn: "y_pred contains classes not in y_true"
        m = classification_metrics([0, 0, 1], [0, 2, 1], NAMES, present_only=True)
    assert m["balanced_accuracy"] == pytest.approx(0.75)


def test_report_without_prior_probabilities(tmp_path):
    run_dir = fake_run(tmp_path / "old", 2, prior_columns=False)
    text = write_report(run_dir).read_text()
    prior_line = [line for line in text.splitlines() if line.startswith("| prior network")][0]
    assert prior_line.rstrip(" |").endswith("n/a") and "no prior_p_ columns" in text


def test_report_names_a_missing_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.json not found"):
        write_report(tmp_path)


# ---------------------------------------------------------------- comparison tables

def test_thirds():
    assert [(g, list(r)) for g, r in thirds(7)] == [("head", [0, 1, 2]), ("medium", [3, 4]), ("tail", [5, 6])]
    assert [g for g, _ in thirds(2)] == ["head", "medium"]


def test_compare_experiments_mean_std_by_hand(tmp_path):
    exp = tmp_path / "ADPM"
    runs = [fake_run(exp / f"fold{i}" / "run", i) for i in range(3)]  # nested one level deeper
    single = fake_run(tmp_path / "baseline", 7)
    assert find_runs(exp) == runs and find_runs(single) == [single]
    out = tmp_path / "cmp" / "comparison.md"
    text = compare([exp, single], out=out)
    assert out.read_text() == text
    acc = [json.loads((r / "metrics.json").read_text())["accuracy"] for r in runs]
    expected = f"{np.mean(acc):.3f} ± {np.std(acc, ddof=1):.3f}"
    row = [line for line in text.splitlines() if line.startswith("| ADPM ")][0]
    assert row.split("|")[2].strip() == "3" and row.split("|")[4].strip() == expected
    assert row.split("|")[3].strip() == "CV folds (1)"  # fake_run scores every run on fold0
    assert any(line.startswith("| prior network (ADPM)") for line in text.splitlines())
    assert any(line.startswith("| baseline ") for line in text.splitlines())
    # per-class: tail accuracy = recall mean ± std, and the head/medium/tail group rows
    recall = [json.loads((r / "metrics.json").read_text())["per_class"]["tail"]["recall"] for r in runs]
    tail_row = [line for line in text.splitlines() if line.startswith("| tail ")][0]
    assert tail_row.split("|")[3].strip() == f"{np.mean(recall):.3f} ± {np.std(recall, ddof=1):.3f}"
    assert "**head** (1 classes)" in text and "**tail** (1 classes)" in text


def test_compare_says_where_each_row_was_scored():
    from adpm_dist.report.compare import scored_on

    assert scored_on([{"eval_part": "test"}] * 2) == "test"
    assert scored_on([{"eval_part": f"fold{k}"} for k in range(5)]) == "CV folds (5)"
    assert scored_on([{"eval_part": "fold0"}, {"eval_part": "test"}]) == "mixed: fold0, test"
    assert scored_on([{}]) == "?"


def test_compare_labels_and_errors(tmp_path):
    run = fake_run(tmp_path / "r", 0)
    text = compare([run], labels=["ADPM (ours)"], include_prior=False)
    assert "| ADPM (ours) " in text and "prior network" not in text
    pooled = compare([run, fake_run(tmp_path / "r2", 1)], labels=["cfg A", "cfg A"])
    row = [line for line in pooled.splitlines() if line.startswith("| cfg A ")][0]
    assert row.split("|")[2].strip() == "2" and "| prior network " in pooled  # one method, one prior row
    with pytest.raises(ValueError, match="one --label per path"):
        compare([run], labels=["a", "b"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no metrics.json below it"):
        compare([tmp_path / "empty"])
    other = tmp_path / "other"
    fake_run(other, 1)
    metrics = json.loads((other / "metrics.json").read_text())
    metrics["per_class"]["extra"] = metrics["per_class"].pop("tail")
    (other / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match="differ from"):
        compare([run, other])


def test_compare_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_run(tmp_path / "exp" / "a", 0)
    fake_run(tmp_path / "exp" / "b", 1)
    assert report_main(["compare", "exp", "--label", "mine"]) == 0
    assert "| mine " in capsys.readouterr().out and (tmp_path / "comparison.md").is_file()
    assert report_main(["compare", "nowhere"]) == 1
    assert "nowhere: no such run" in capsys.readouterr().err


# ---------------------------------------------------------------- reverse-chain trace

@pytest.mark.parametrize("sampler,overrides", [("truncated", []), ("respaced", []), ("ddim", []),
                                               # the demo's model: the prior's feature map, y0 target
                                               ("truncated", ["model.encoder=prior", "diffusion.prediction=y0"]),
                                               ("ddim", ["model.encoder=prior", "diffusion.prediction=y0"])])
def test_trace_ends_where_model_sample_ends(sampler, overrides):
    """The recorded chain is ADPM.sample's chain: same generator -> same y0 (and the start is mu + lambda z)."""
    cfg = load_config(ROOT / "configs" / "digits_lt_tiny.yaml", overrides)
    torch.manual_seed(0)
    model = build_model(cfg, [50, 20, 10, 5, 5, 5, 5, 5, 5, 5]).eval()
    images = torch.randn(6, 3, cfg.data.image_size, cfg.data.image_size)
    recorded, y0 = trace_reverse_chain(model, images, sampler=sampler, steps=8, snapshots=[7, 3, 0],
                                       generator=torch.Generator().manual_seed(5))
    expected, mu = model.sample(images, sampler=sampler, steps=8, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(y0, expected, atol=1e-5)
    assert [i for i, _ in recorded] == [7, 3, 0] and all(y.shape == (6, 10) for _, y in recorded)
    assert not torch.allclose(recorded[0][1], y0)


# ---------------------------------------------------------------- one really trained tiny run

@pytest.fixture(scope="module")
def trained_run(digits_shards, tmp_path_factory):
    from adpm_dist.runtime.engine import train

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    cfg = load_config(ROOT / "configs" / "digits_lt_tiny.yaml",
                      [f"data.shards={digits_shards}", f"run.output_dir={out}", "train.epochs=1",
                       "diffusion.test_timesteps=5"])  # warm-up + 1 joint epoch, 5-step chain: fast
    train(cfg)
    write_report(out)  # what launch/train.py does after the engine
    return out


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_training_leaves_a_report(trained_run):
    assert (trained_run / "report.md").is_file()
    for name in FIGURES:
        assert (trained_run / name).is_file()
    header = (trained_run / "predictions.csv").read_text().splitlines()[0].split(",")
    assert "prior_p_0" in header and "p_9" in header
    text = (trained_run / "report.md").read_text()
    assert "n/a |\n" not in text.split("## Per class")[0]  # the prior has its AUC and ECE


def test_compare_command_on_the_run(trained_run, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "adpm_dist.report", "compare", str(trained_run), "--out",
                           str(tmp_path / "c.md")], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| run " in proc.stdout and "| prior network " in proc.stdout and "**tail**" in proc.stdout


def test_predict_command_on_the_run(trained_run, tmp_path):
    images = tmp_path / "images"
    (images / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / "nested" / "b.jpeg")
    (images / "nested" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    out = tmp_path / "preds.csv"
    proc = subprocess.run([sys.executable, "-m", "adpm_dist.predict", "--checkpoint", str(trained_run), "--images",
                           str(images), "--out", str(out), "--samples", "2", "--batch-size", "2", "--device", "cpu",
                           "--quiet"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out) as f:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    assert set(rows) == {"a.png", "b.jpeg", "broken.jpg"} and rows["broken.jpg"]["error"]
    assert rows["a.png"]["prediction"] in [str(i) for i in range(10)] and float(rows["a.png"]["p_0"]) in (0, 0.5, 1)
    assert "broken.jpg" in proc.stderr


def test_tsne_command_on_the_run(trained_run):
    assert report_main(["tsne", "--run", str(trained_run), "--per-class", "4", "--steps", "4,2,0"]) == 0
    with Image.open(trained_run / "tsne.png") as im:
        assert im.format == "PNG"
    assert "](tsne.png)" in (trained_run / "report.md").read_text()
