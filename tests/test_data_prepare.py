"""prepare: CLI and library, shards + manifest + index, determinism, imagefolder, errors."""

import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adpm_dist.data.manifest import load_manifest, verify_shards
from adpm_dist.data.prepare import main, prepare


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def digits_out(tmp_path_factory):
    """The real CLI, in a subprocess, exactly as the Makefile runs it."""
    out = tmp_path_factory.mktemp("digits") / "shards"
    proc = subprocess.run(
        [sys.executable, "-m", "adpm_dist.data.prepare", "--dataset", "digits_lt", "--out", str(out),
         "--samples-per-shard", "100"],
        capture_output=True, text=True, check=True,
    )
    return out, proc.stdout


def test_cli_writes_shards_manifest_and_index(digits_out):
    out, stdout = digits_out
    m = load_manifest(out)
    assert m.dataset == "digits_lt" and m.image_size == 32 and m.protocol == "fixed-test"
    assert list(m.parts) == ["train", "val", "test"]
    assert sum(m.num_samples.values()) == 1797 and m.rejected == []
    assert m.counts["val"] == {c: 10 for c in m.class_names} and m.options["val_per_class"] == 10
    counts = m.counts["train"]
    assert max(counts.values()) == 150 and min(counts.values()) == 3
    # the printed table ends with the totals row
    assert stdout.strip().splitlines()[-1].split() == ["total", str(m.num_samples["train"]), "100",
                                                       str(m.num_samples["test"]), "1797"]
    # index.csv agrees with the manifest counts and keys are unique
    idx = Counter((r.part, r.class_name) for r in m.index)
    assert all(idx[(p, c)] == n for p, cs in m.counts.items() for c, n in cs.items())
    assert len({r.key for r in m.index}) == len(m.index) == 1797


def test_shards_content_matches_index_and_sha(digits_out):
    out, _ = digits_out
    m = load_manifest(out)
    verify_shards(m)  # raises on mismatch
    for part, infos in m.shards.items():
        for info in infos:
            assert _sha(out / info["file"]) == info["sha256"]
            assert info["num_samples"] <= 100
    # one shard: every sample has png + json with the documented fields, matching index.csv
    rows = {r.key: r for r in m.index}
    with tarfile.open(m.parts["train"][0]) as tar:
        names = tar.getnames()
        metas = [json.load(tar.extractfile(n)) for n in names if n.endswith(".json")]
        png = Image.open(io.BytesIO(tar.extractfile(names[0] if names[0].endswith(".png") else names[1]).read()))
    assert png.size == (32, 32)
    assert len(names) == 2 * len(metas)
    for meta in metas:
        row = rows[meta["key"]]
        assert (meta["label"], meta["class_name"], meta["group"], meta["part"]) == (
            row.label, row.class_name, row.group, row.part) and row.part == "train"
        assert row.shard == m.parts["train"][0].name


def test_rerun_is_idempotent_and_cleans_stale_shards(digits_out, tmp_path):
    out, _ = digits_out
    first = json.loads((out / "manifest.json").read_text())
    # same input into another directory (in-process this time): byte-identical output
    other = tmp_path / "again"
    assert main(["--dataset", "digits_lt", "--out", str(other), "--samples-per-shard", "100", "--quiet"]) == 0
    assert json.loads((other / "manifest.json").read_text()) == first
    assert (other / "index.csv").read_bytes() == (out / "index.csv").read_bytes()
    # re-run in place with bigger shards (--overwrite): the old, now unlisted shard files disappear
    prepare("digits_lt", other, samples_per_shard=1000, progress=False, overwrite=True)
    assert sorted(p.name for p in other.glob("*.tar")) == ["test-000000.tar", "test-000001.tar", "train-000000.tar",
                                                            "val-000000.tar"]
    assert not list(other.glob(".*")) and not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_digits_folds_protocol(tmp_path):
    m = prepare("digits_lt", tmp_path, folds=3, image_size=16, progress=False, imbalance_ratio=10)
    assert list(m.parts) == ["fold0", "fold1", "fold2", "val", "test"] and m.protocol == "3-fold+fixed-test"
    assert m.image_size == 16 and m.options["imbalance_ratio"] == 10
    assert sorted(m.counts["fold0"].values())[-1] in (50, 49, 51)  # n_max 150 over 3 folds


def _write_image(path: Path, size=(40, 30), seed=0, fmt=None):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, format=fmt)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "root"
    for ci, cls in enumerate(["cat", "dog", "eel"]):
        (root / cls).mkdir(parents=True)
        for i in range(6 + 2 * ci):
            ext = [".png", ".jpg", ".bmp"][i % 3]
            _write_image(root / cls / f"img.{i:02d}{ext}", seed=10 * ci + i)
    (root / "dog" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    good = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(good, format="JPEG")
    (root / "eel" / "truncated.jpg").write_bytes(good.getvalue()[:300])
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".DS_Store").write_bytes(b"junk")
    return root


def test_imagefolder_folds_and_rejected(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--dataset", "imagefolder", "--root", str(folder), "--out", str(out), "--folds", "3",
                 "--image-size", "16", "--samples-per-shard", "4"]) == 0
    m = load_manifest(out)
    assert m.class_names == ["cat", "dog", "eel"] and m.protocol == "3-fold"
    assert list(m.parts) == ["fold0", "fold1", "fold2"]
    assert {k: sum(m.counts[p][k] for p in m.parts) for k in m.class_names} == {"cat": 6, "dog": 8, "eel": 10}
    rejected = {Path(r["file"]).name: r["reason"] for r in m.rejected}
    assert set(rejected) == {"corrupt.jpg", "truncated.jpg", "notes.txt", ".DS_Store"}
    assert m.inputs == {"found": 28, "written": 24, "rejected": 4}
    assert "WARNING" in capsys.readouterr().err
    for part in m.parts:  # stratified: every class in every fold
        assert all(m.counts[part][c] >= 2 for c in m.class_names)
    verify_shards(m)
    # images larger than --image-size are stored with shorter side 16, aspect kept
    with tarfile.open(m.parts["fold0"][0]) as tar:
        member = next(n for n in tar.getnames() if not n.endswith(".json"))
        assert Image.open(tar.extractfile(member)).size == (21, 16)
    assert all("." not in r.key and "/" not in r.key for r in m.index)


def test_imagefolder_test_root(folder, tmp_path):
    test_root = tmp_path / "test_root"
    for cls in ["cat", "eel"]:  # a subset of the classes is fine
        (test_root / cls).mkdir(parents=True)
        _write_image(test_root / cls / "img.00.png", size=(8, 8), seed=99)
    m = prepare("imagefolder", tmp_path / "out", root=folder, test_root=test_root, progress=False)
    assert list(m.parts) == ["train", "test"] and m.protocol == "fixed-test"
    assert m.counts["test"] == {"cat": 1, "dog": 0, "eel": 1}
    assert m.num_samples["train"] == 24
    assert {r.key for r in m.rows("test")} == {"test-cat-img_00", "test-eel-img_00"}
    # small PNG, no resize needed: stored byte-for-byte
    with tarfile.open(m.parts["test"][0]) as tar:
        member = next(n for n in tar.getnames() if n.startswith("test-cat") and n.endswith(".png"))
        assert tar.extractfile(member).read() == (test_root / "cat" / "img.00.png").read_bytes()


def test_clear_errors(folder, tmp_path, capsys):
    out = str(tmp_path / "o")
    assert main(["--dataset", "imagefolder", "--out", out]) == 2
    assert "--root" in capsys.readouterr().err
    assert main(["--dataset", "imagefolder", "--root", str(tmp_path / "nope"), "--out", out]) == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err
    (folder / "empty").mkdir()
    assert main(["--dataset", "imagefolder", "--root", str(folder), "--out", out]) == 2
    assert f"empty class folder {folder / 'empty'}" in capsys.readouterr().err
    assert main(["--dataset", "imagefolder", "--root", str(folder), "--out", out, "--imbalance-ratio", "5"]) == 2
    assert "imbalance_ratio" in capsys.readouterr().err
    assert main(["--dataset", "digits_lt", "--root", str(folder), "--out", out]) == 2
    assert "digits_lt" in capsys.readouterr().err


def test_load_manifest_errors(tmp_path, digits_out):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match=str(tmp_path / "manifest.json")):
        load_manifest(tmp_path)
    out, _ = digits_out
    (tmp_path / "manifest.json").write_text((out / "manifest.json").read_text())
    with pytest.raises(FileNotFoundError, match="index.csv"):
        load_manifest(tmp_path)


def test_out_holding_a_set_is_refused_without_overwrite_and_replaced_whole_with_it(folder, tmp_path, capsys):
    """A --test-root set is not replaced by a K-fold set unasked; with --overwrite it is swapped whole."""
    test_root = tmp_path / "test_root"
    (test_root / "cat").mkdir(parents=True)
    _write_image(test_root / "cat" / "a.png", size=(8, 8))
    out = tmp_path / "out"
    args = ["--dataset", "imagefolder", "--root", str(folder), "--out", str(out), "--image-size", "8", "--quiet"]
    assert main(args + ["--test-root", str(test_root)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(args + ["--folds", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--out {out} already holds a shard set (imagefolder, fixed-test" in err[0]
    assert "--overwrite" in err[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched
    assert main(args + ["--folds", "3", "--overwrite"]) == 0
    assert list(load_manifest(out).parts) == ["fold0", "fold1", "fold2"]
    assert not any(p.name.startswith("test-") for p in out.iterdir())  # nothing of the old set mixed in
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # a directory with files prepare did not write is refused even with --overwrite, and kept
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    assert main(args + ["--out", str(mine), "--overwrite"]) == 2
    assert "thesis.tex" in capsys.readouterr().err and (mine / "thesis.tex").read_text() == "precious"


def test_a_prepare_killed_between_the_renames_gets_its_set_back(digits_out, tmp_path):
    """Killed after moving the old set aside and before moving the new one in: the next prepare
    puts the old set back first (then refuses to replace it without --overwrite)."""
    src, _ = digits_out
    out = tmp_path / "set"
    aside = tmp_path / ".set.old.tmp-999999999"  # no such process
    shutil.copytree(src, aside)
    half = tmp_path / ".set.new.tmp-999999998"
    half.mkdir()
    (half / "train-000000.tar").write_bytes(b"half")
    with pytest.raises(ValueError, match="--overwrite"):
        prepare("digits_lt", out, progress=False)
    assert (out / "manifest.json").read_bytes() == (src / "manifest.json").read_bytes()
    assert not aside.exists() and not half.exists()
