"""adpm_dist.predict on an untrained tiny model saved as a checkpoint (no training needed here;
tests/test_report.py runs prediction on a really trained tiny run)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adpm_dist.runtime.checkpoint import atomic_torch_save
from adpm_dist.config import load_config, to_dict
from adpm_dist.data.transforms import build_transform
from adpm_dist.methods import build_model
from adpm_dist.predict import find_images, load_model, predict_images, write_predictions_csv
from adpm_dist.predict.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
CLASSES = [f"c{i}" for i in range(10)]


def _save(path: Path, state: dict, config: dict, class_names: list[str]) -> Path:
    atomic_torch_save({"model": state, "config": config, "epoch": 1, "class_names": class_names},
                      path / "checkpoints" / "best.pt")
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    cfg = load_config(ROOT / "configs" / "digits_lt_tiny.yaml", ["diffusion.test_timesteps=5"])
    torch.manual_seed(0)
    model = build_model(cfg, [100, 60, 40, 30, 20, 15, 10, 8, 6, 5])
    return model.state_dict(), to_dict(cfg)


@pytest.fixture(scope="module")
def run_dir(tiny_model, tmp_path_factory):
    state, config = tiny_model
    return _save(tmp_path_factory.mktemp("run"), state, config, CLASSES)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """RGB PNGs of odd sizes, a greyscale JPEG in a sub-folder, one corrupt PNG, one non-image file."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (root / "sub").mkdir()
    for i, (h, w) in enumerate([(40, 50), (32, 32), (90, 30)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / f"img{i}.png")
    Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(root / "sub" / "grey.JPG")
    (root / "sub" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (root / "notes.txt").write_text("not an image")
    return root


def test_find_images_recurses_filters_and_keeps_missing(image_folder, tmp_path):
    found = find_images([image_folder, tmp_path / "missing.png"])
    names = [p.name for p in found]
    assert names == ["img0.png", "img1.png", "img2.png", "corrupt.png", "grey.JPG", "missing.png"]


def test_predict_folder_with_a_corrupt_file(run_dir, image_folder):
    loaded = load_model(run_dir, "cpu")
    rows = predict_images(loaded, [image_folder], samples=1, batch_size=2, seed=0)
    assert len(rows) == 5
    bad = [r for r in rows if r["error"]]
    assert [Path(r["path"]).name for r in bad] == ["corrupt.png"] and "cannot read image" in bad[0]["error"]
    for r in rows:
        if r["error"]:
            assert "prediction" not in r
            continue
        probs = [r[f"p_{c}"] for c in CLASSES]
        assert r["prediction"] == CLASSES[int(np.argmax(probs))] and sum(probs) == pytest.approx(1, abs=1e-5)
        assert "agreement" not in r and "entropy" not in r  # removed: they never told right from wrong
        assert sum(r[f"prior_p_{c}"] for c in CLASSES) == pytest.approx(1, abs=1e-5)
    # the same seed gives the same answer
    again = predict_images(loaded, [image_folder], samples=1, batch_size=2, seed=0)
    assert [r.get("p_c0") for r in again] == [r.get("p_c0") for r in rows]


def test_vote_shares_over_several_samples(run_dir, image_folder):
    loaded = load_model(run_dir, "cpu")
    rows = [r for r in predict_images(loaded, [image_folder], samples=4, batch_size=8) if not r["error"]]
    for r in rows:
        shares = np.array([r[f"p_{c}"] for c in CLASSES])
        # with 4 samples the probabilities are vote shares: multiples of 1/4
        assert np.allclose(shares * 4, np.round(shares * 4), atol=1e-4)
        assert r["prediction"] == CLASSES[int(shares.argmax())]


def test_cli_writes_csv_and_reports_unreadable(run_dir, image_folder, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    (tmp_path / "gone.png").symlink_to(tmp_path / "deleted.png")  # a dangling link: an error row, not a gap
    code = main(["--checkpoint", str(run_dir), "--images", str(image_folder), str(tmp_path / "gone.png"),
                 "--out", str(out), "--batch-size", "3", "--device", "cpu", "--steps", "3", "--quiet"])
    assert code == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and sum(bool(r["error"]) for r in rows) == 2
    assert rows[-1]["error"].startswith("dangling symlink to") and rows[0]["prediction"] in CLASSES
    err = capsys.readouterr().err
    assert "corrupt.png" in err and "4 images predicted, 2 unreadable" in err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".preds.csv")]  # no temporary file left


def test_cli_refuses_a_missing_path_before_writing(run_dir, image_folder, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    code = main(["--checkpoint", str(run_dir), "--images", str(image_folder), str(tmp_path / "typo.png"),
                 "--out", str(out), "--device", "cpu", "--quiet"])
    assert code == 2 and not out.exists()
    assert "typo.png" in capsys.readouterr().err


def test_find_images_lists_a_dangling_symlink_in_a_folder(tmp_path):
    (tmp_path / "a.png").symlink_to(tmp_path / "nowhere.png")
    assert [p.name for p in find_images([tmp_path])] == ["a.png"]


def test_cli_without_images_fails(run_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["--checkpoint", str(run_dir), "--images", str(tmp_path / "empty"), "--out",
                 str(tmp_path / "p.csv"), "--quiet"]) == 1
    assert "no image files found" in capsys.readouterr().err


def test_wrong_class_count_fails_clearly(tiny_model, tmp_path):
    state, config = tiny_model
    _save(tmp_path, state, config, CLASSES[:7])
    with pytest.raises(ValueError, match="weights are for 10 classes but the checkpoint names 7"):
        load_model(tmp_path)


def test_expected_classes_are_checked(run_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match="differ from the expected"):
        load_model(run_dir, expected_classes=["a", "b"])
    assert main(["--checkpoint", str(run_dir), "--images", str(tmp_path), "--out", str(tmp_path / "p.csv"),
                 "--classes", "MEL,NV"]) == 1
    assert "differ from the expected ['MEL', 'NV']" in capsys.readouterr().err


def test_weights_of_another_shape_fail_clearly(tiny_model, tmp_path):
    state, config = tiny_model
    other = {**config, "model": {**config["model"], "hidden_dim": 128}}
    _save(tmp_path, state, other, CLASSES)
    with pytest.raises(ValueError, match=r"weights do not fit .*model.hidden_dim=128.*shape mismatch"):
        load_model(tmp_path)


def test_incompatible_config_fails_clearly(tiny_model, tmp_path):
    state, config = tiny_model
    _save(tmp_path, state, {**config, "train": {**config["train"], "epochz": 3}}, CLASSES)
    with pytest.raises(ValueError, match="incompatible .*train.epochz"):
        load_model(tmp_path)


@pytest.mark.parametrize("method", ["logit_adjusted", "prior"])
def test_a_baseline_checkpoint_predicts(method, image_folder, tmp_path):
    cfg = load_config(ROOT / "configs" / "digits_lt_tiny.yaml", [f"method={method}"])
    torch.manual_seed(0)
    model = build_model(cfg, [100, 60, 40, 30, 20, 15, 10, 8, 6, 5]).eval()
    run = _save(tmp_path / "run", model.state_dict(), to_dict(cfg), CLASSES)
    loaded = load_model(run, device="cpu")
    assert loaded.cfg.method == method and type(loaded.model).__name__ == "ClassifierModel"
    rows = [r for r in predict_images(loaded, [image_folder]) if not r["error"]]
    assert len(rows) == 4
    transform = build_transform(32, train=False)
    with Image.open(image_folder / "img1.png") as im:
        expected = torch.softmax(model.outputs(transform(im.convert("RGB"))[None]), 1)[0]
    row = next(r for r in rows if r["path"].endswith("img1.png"))
    assert np.allclose([row[f"p_{c}"] for c in CLASSES], expected.detach().numpy(), atol=1e-5)
    assert row["prediction"] == CLASSES[int(expected.argmax())]
    assert not any(k.startswith("prior_") for k in row)  # no copy of p_* as prior_p_* (a baseline has no prior)
    header = write_predictions_csv(rows, CLASSES, tmp_path / "p.csv").read_text().splitlines()[0]
    assert "prior" not in header
    with pytest.raises(ValueError, match="deterministic"):
        predict_images(loaded, [image_folder], samples=3)
    from adpm_dist.report.tsne import write_tsne

    with pytest.raises(ValueError, match=f"method={method} run has no reverse chain"):
        write_tsne([run])


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoints/best.pt"):
        load_model(tmp_path)
    atomic_torch_save({"weights": {}}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not an adpm-dist checkpoint"):
        load_model(tmp_path / "x.pt")


def test_bad_sampling_options(run_dir, image_folder):
    loaded = load_model(run_dir, "cpu")
    with pytest.raises(ValueError, match="diffusion.sampler"):
        predict_images(loaded, [image_folder], sampler="euler")
    with pytest.raises(ValueError, match="diffusion.test_timesteps"):
        predict_images(loaded, [image_folder], steps=5000)
    with pytest.raises(ValueError, match="--samples"):
        predict_images(loaded, [image_folder], samples=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_requested_without_cuda(run_dir):
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_model(run_dir, "cuda")


def test_csv_has_a_column_per_class(tmp_path):
    out = write_predictions_csv([{"path": "x.png", "error": "file not found"}], ["a", "b"], tmp_path / "p.csv",
                                prior=True)
    assert out.read_text().splitlines()[0] == ("path,prediction,prior_prediction,p_a,p_b,"
                                                "prior_p_a,prior_p_b,error")
