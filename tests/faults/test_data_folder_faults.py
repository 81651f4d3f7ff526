"""Hostile image folders for `prepare --dataset imagefolder`: every input found is a sample or a
rejection with its reason, keys are unique and deterministic, and no collision aborts prepare."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adpm_dist.data.imagefolder import read_imagefolder
from adpm_dist.data.manifest import load_manifest
from adpm_dist.data.prepare import main

pytestmark = pytest.mark.faults


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def hostile(tmp_path) -> tuple[Path, set[str], set[str]]:
    """(root, images that must become samples, entries that must be rejections)."""
    root = tmp_path / "root"
    samples = ["A/a0.png", "A/a1.png", "A/sub/deeper/nested.png", "B/猫.jpg", "B/犬.jpg", "B/dup.jpg", "B/dup.png",
               "B/a b.png", "B/a_b.png", "B/b0.png"]
    for i, name in enumerate(samples):
        _image(root / name, i)
    _image(root / "at_root.png", 90)
    _image(root / "A" / ".hidden.png", 91)
    _image(root / ".git" / "x.png", 92)
    _image(tmp_path / "elsewhere" / "e.png", 93)
    os.symlink(tmp_path / "elsewhere", root / "A" / "linked")
    os.symlink(tmp_path / "nowhere.png", root / "B" / "broken.png")
    (root / "B" / "notes.txt").write_text("not an image")
    os.mkfifo(root / "B" / "pipe.jpg")  # would block a reader that opened it
    rejected = {"at_root.png", "A/.hidden.png", ".git", "A/linked", "B/broken.png", "B/notes.txt", "B/pipe.jpg"}
    return root, set(samples), rejected


def test_every_input_is_a_sample_or_a_rejection_with_keys_unique(hostile, tmp_path, capsys):
    root, samples, rejected = hostile
    out = tmp_path / "out"
    assert main(["--dataset", "imagefolder", "--root", str(root), "--out", str(out), "--folds", "0",
                 "--image-size", "8", "--quiet"]) == 0
    m = load_manifest(out)
    reasons = {Path(r["file"]).relative_to(root).as_posix(): r["reason"] for r in m.rejected}
    assert set(reasons) == rejected and all(reasons.values())
    assert "symbolic link to a folder" in reasons["A/linked"] and "hidden folder" in reasons[".git"]
    assert "not inside a class folder" in reasons["at_root.png"] and "not a regular file" in reasons["B/pipe.jpg"]
    assert m.num_samples["train"] == len(samples)  # nested images belong to their class
    assert m.inputs == {"found": len(samples) + len(rejected), "written": len(samples), "rejected": len(rejected)}
    keys = [r.key for r in m.index]
    assert len(set(keys)) == len(keys) and all("." not in k and "/" not in k for k in keys)
    assert {"A-a0", "A-sub_deeper_nested", "B-b0"} <= set(keys)  # plain names keep plain keys


def test_keys_depend_only_on_each_file_path(hostile):
    root, _, _ = hostile
    keys = {r.path.relative_to(root).as_posix(): r.key for r in read_imagefolder(root=root).records}
    assert keys == {r.path.relative_to(root).as_posix(): r.key for r in read_imagefolder(root=root).records}
    assert keys["B/猫.jpg"] != keys["B/犬.jpg"] and keys["B/dup.jpg"] != keys["B/dup.png"]
    (root / "B" / "犬.jpg").unlink()
    (root / "B" / "dup.png").unlink()
    again = {r.path.relative_to(root).as_posix(): r.key for r in read_imagefolder(root=root).records}
    assert again["B/猫.jpg"] == keys["B/猫.jpg"]  # a non-ASCII name's key does not depend on its neighbours
    assert again["B/dup.jpg"] == "B-dup"  # without its twin it keeps its plain key
