"""`prepare --groups FILE.csv`: a patient's (or lesion's) images never span two folds, nor the folds
and a carved test part; group ids land in index.csv; the manifest records the file; identical
images in different groups are warned about."""
from __future__ import annotations

import csv
import shutil
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from adpm_dist.data.groups import GroupsError
from adpm_dist.data.manifest import load_manifest
from adpm_dist.data.prepare import main, prepare

CLASSES = {"nevus": 9, "melanoma (mel)": 5, "bcc": 3}  # patients per class


def _folder(tmp_path, seed=0):
    """ROOT/<class>/p<patient>_<n>.png: 1-4 images per patient; returns (root, {relative path: patient})."""
    rng = np.random.default_rng(seed)
    root, patient_of = tmp_path / "images", {}
    for c, (name, patients) in enumerate(CLASSES.items()):
        (root / name).mkdir(parents=True)
        for p in range(patients):
            for n in range(1 + (p * 7 + c) % 4):
                rel = f"{name}/p{c}{p}_{n}.png"
                Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(root / rel)
                patient_of[rel] = f"patient-{c}{p}"
    return root, patient_of


def _write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "group", "note"])
        w.writerows([image, group, "x"] for image, group in rows)
    return path


def _parts_of_groups(manifest):
    parts = defaultdict(set)
    for row in manifest.rows(list(manifest.parts)):
        parts[row.group].add(row.part)
    return parts


@pytest.mark.parametrize("by", ["path", "name"])
def test_no_group_crosses_a_fold_or_the_test_split(tmp_path, by):
    root, patient_of = _folder(tmp_path)
    rows = [(rel if by == "path" else rel.split("/")[-1], g) for rel, g in patient_of.items()]
    groups = _write_csv(tmp_path / "groups.csv", rows)
    m = prepare("imagefolder", tmp_path / "out", root=root, folds=3, test_fraction=0.3, groups=groups,
                image_size=12, workers=1, progress=False)
    parts = _parts_of_groups(m)
    assert set(parts) == set(patient_of.values())  # index.csv's group column holds the patient ids
    assert all(len(p) == 1 for p in parts.values()), {g: p for g, p in parts.items() if len(p) > 1}
    assert {p for ps in parts.values() for p in ps} == {"fold0", "fold1", "fold2", "test"}
    recorded = m.options["groups"]
    assert recorded["file"] == str(groups.resolve()) and recorded["images_matched"] == len(patient_of)
    assert recorded["groups"] == len(set(patient_of.values())) and len(recorded["sha256"]) == 64


def test_without_groups_the_same_folder_splits_patients(tmp_path):
    """The check above can fail: without --groups, some patient's images land in two parts."""
    root, _ = _folder(tmp_path)
    m = prepare("imagefolder", tmp_path / "out", root=root, folds=3, test_fraction=0.3, image_size=12, workers=1,
                progress=False)
    patients = defaultdict(set)
    for row in m.rows(list(m.parts)):
        patients[row.key.rsplit("_", 1)[0]].add(row.part)
    assert any(len(p) > 1 for p in patients.values())


def test_duplicates_in_different_groups_are_warned_and_recorded(tmp_path, capsys):
    root, patient_of = _folder(tmp_path)
    shutil.copy(root / "nevus/p00_0.png", root / "nevus/copy.png")  # same bytes, another group
    groups = _write_csv(tmp_path / "groups.csv", [(r, g) for r, g in patient_of.items()][:-1])  # one image left out
    code = main(["--dataset", "imagefolder", "--root", str(root), "--groups", str(groups), "--folds", "2",
                 "--image-size", "12", "--workers", "1", "--quiet", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 0
    assert "1 set(s) of identical images (same bytes) are in different groups" in err and "copy.png" in err
    assert "names no group for 2 of" in err  # copy.png and the row left out: each its own group
    assert any("identical images" in w for w in load_manifest(tmp_path / "out").warnings)


def test_bad_groups_files_are_refused_in_one_line(tmp_path, capsys):
    root, patient_of = _folder(tmp_path)
    bad_columns = tmp_path / "bad.csv"
    bad_columns.write_text("file,patient\na.png,1\n")
    with pytest.raises(GroupsError, match=r"no column\(s\) \['image', 'group'\]"):
        prepare("imagefolder", tmp_path / "o1", root=root, groups=bad_columns, workers=1, progress=False)
    twice = _write_csv(tmp_path / "twice.csv", [("bcc/p20_0.png", "a"), ("bcc/p20_0.png", "b")])
    with pytest.raises(GroupsError, match="line 3: image 'bcc/p20_0.png' is in group 'a' and 'b'"):
        prepare("imagefolder", tmp_path / "o2", root=root, groups=twice, workers=1, progress=False)
    test_root = tmp_path / "test_images"
    (test_root / "bcc").mkdir(parents=True)
    shutil.copy(root / "bcc/p20_0.png", test_root / "bcc/t.png")
    across = _write_csv(tmp_path / "across.csv", [("bcc/p20_0.png", "P"), ("bcc/t.png", "P")])
    with pytest.raises(GroupsError, match=r"group\(s\) \['P'\] have images under both --root and --test-root"):
        prepare("imagefolder", tmp_path / "o3", root=root, test_root=test_root, groups=across, workers=1,
                progress=False)
    code = main(["--dataset", "digits_lt", "--groups", str(twice), "--out", str(tmp_path / "o4")])
    assert code == 2 and "--groups is for --dataset imagefolder" in capsys.readouterr().err
