"""benchmarks/photo_lt.py: a small long-tailed set from bundled photographs: classes, counts, IR,
a balanced test part, train/test patches from disjoint regions, the same files for the same seed."""
from __future__ import annotations

import csv
import json

import pytest

pytest.importorskip("skimage", reason="scikit-image: the benchmarks extra (pip install -e '.[benchmarks]')")

from benchmarks.photo_lt import PHOTOS, Region, build, long_tail_counts, main  # noqa: E402


def test_small_build_has_the_profile_and_disjoint_regions(tmp_path):
    info = build(tmp_path / "a", ir=50, classes=10, size=16, n_max=50, test_per_class=4, seed=3)
    counts = info["train_counts"]
    assert len(counts) == 10 and sorted(counts.values(), reverse=True) == long_tail_counts(10, 50, 50)
    assert max(counts.values()) / min(counts.values()) == 50
    assert set(counts) == {name for name, _, _ in PHOTOS[:10]}
    rows = list(csv.DictReader(open(tmp_path / "a" / "patches.csv")))
    for name, n in counts.items():
        files = sorted((tmp_path / "a" / "train" / name).glob("*.png"))
        assert len(files) == n
        assert len(list((tmp_path / "a" / "test" / name).glob("*.png"))) == 4
    for row in rows:  # every patch lies inside its own part's region, and the regions do not overlap
        regions = info["regions"][row["class"]]
        train, test = Region(**regions["train"]), Region(**regions["test"])
        box = (int(row["top"]), int(row["left"]), int(row["side"]))
        assert (train if row["part"] == "train" else test).contains(*box)
        rows_overlap = train.top < test.bottom and test.top < train.bottom
        cols_overlap = train.left < test.right and test.left < train.right
        assert not (rows_overlap and cols_overlap)
    again = build(tmp_path / "b", ir=50, classes=10, size=16, n_max=50, test_per_class=4, seed=3)
    assert again == info
    first = sorted((tmp_path / "a" / "train").rglob("*.png"))
    assert [p.read_bytes() for p in first] == [(tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes()
                                               for p in first]
    assert json.loads((tmp_path / "a" / "photo_lt.json").read_text())["class_order"] == info["class_order"]


def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--classes", str(len(PHOTOS) + 1)]) == 2
    assert "--classes must be in" in capsys.readouterr().err
    build(tmp_path / "c", classes=2, n_max=2, test_per_class=1, size=8)
    assert main(["--out", str(tmp_path / "c"), "--classes", "2"]) == 2  # never over a built set
    assert "already holds a dataset" in capsys.readouterr().err


def test_tiles_keep_each_training_patch_inside_one_tile_and_name_it_as_its_group(tmp_path):
    """--tiles: the training region is a grid of non-overlapping tiles, every training patch lies inside its
    tile, the tiles go round-robin (the two patches of the rarest class sit in two tiles), and groups.csv
    names each training image's tile; the test part is drawn as without tiles."""
    info = build(tmp_path / "t", ir=20, classes=4, size=16, n_max=40, test_per_class=3, seed=5, tiles=True)
    rows = list(csv.DictReader(open(tmp_path / "t" / "patches.csv")))
    groups = {r["image"]: r["group"] for r in csv.DictReader(open(tmp_path / "t" / "groups.csv"))}
    train_rows = [r for r in rows if r["part"] == "train"]
    assert len(groups) == len(train_rows) == sum(info["train_counts"].values())
    for name, regions in info["regions"].items():
        tiles = [Region(**t) for t in regions["tiles"]]
        assert len(tiles) >= 4
        for a in range(len(tiles)):
            for b in range(a + 1, len(tiles)):
                x, y = tiles[a], tiles[b]
                assert not (x.top < y.bottom and y.top < x.bottom and x.left < y.right and y.left < x.right)
        mine = [r for r in train_rows if r["class"] == name]
        for r in mine:
            assert tiles[int(r["tile"])].contains(int(r["top"]), int(r["left"]), int(r["side"]))
            assert groups[r["file"].removeprefix("train/")] == f"{name}_tile{r['tile']}"
        assert len({r["tile"] for r in mine}) == min(len(mine), len(tiles))
    assert all(Region(**info["regions"][r["class"]]["test"]).contains(int(r["top"]), int(r["left"]), int(r["side"]))
               for r in rows if r["part"] == "test")
    assert all("_test_" in r["file"] for r in rows if r["part"] == "test")  # groups.csv's names are train-only
