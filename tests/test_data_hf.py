"""`prepare --dataset hf:...` offline (HF_HUB_OFFLINE=1, HF_HOME in tmp): a dataset the test builds
with the `datasets` library, read from its save_to_disk folder and from a repository's parquet
files; ClassLabel names, groups from --group-key kept whole, a Hub id not in the cache refused in
one line (exit 2). Skipped without the [hf] extra."""
from __future__ import annotations

import io
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from process_group import run_session

datasets = pytest.importorskip("datasets")

from adpm_dist.data.manifest import load_manifest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["benign", "malignant", "rare"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A 3-class table of 26 PNG/JPEG images, 2 images per patient, as save_to_disk and as parquet files."""
    rng = np.random.default_rng(0)
    rows = {"img": [], "dx": [], "patient": []}
    for i, (label, n) in enumerate(((0, 14), (1, 8), (2, 4))):
        for j in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (10 + j, 14, 3), dtype=np.uint8)).save(buf, "PNG" if j % 2 else "JPEG")
            rows["img"].append({"bytes": buf.getvalue(), "path": None})
            rows["dx"].append(label)
            rows["patient"].append(f"P{i}{j // 2}")
    features = datasets.Features({"img": datasets.Image(), "dx": datasets.ClassLabel(names=NAMES),
                                  "patient": datasets.Value("string")})
    table = datasets.Dataset.from_dict(rows, features=features)
    base = tmp_path_factory.mktemp("hf")
    datasets.DatasetDict({"train": table}).save_to_disk(str(base / "saved"))
    (base / "repo" / "data").mkdir(parents=True)
    table.to_parquet(str(base / "repo" / "data" / "train-00000-of-00001.parquet"))
    return base


def _prepare(args, hf_home: Path):
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    return run_session([sys.executable, "-m", "adpm_dist.data.prepare", *args, "--quiet", "--workers", "1"],
                       env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("layout", ["saved", "repo"])
def test_an_hf_dataset_prepares_offline_with_its_groups(saved, tmp_path, layout):
    out = tmp_path / "shards"
    done = _prepare(["--dataset", f"hf:{saved / layout}", "--image-key", "img", "--label-key", "dx", "--split",
                     "train", "--group-key", "patient", "--folds", "3", "--image-size", "8", "--out", str(out)],
                    tmp_path / "hf_home")
    assert done.returncode == 0, done.stderr[-2000:]
    m = load_manifest(out)
    assert m.class_names == NAMES and m.dataset == f"hf:{saved / layout}"
    assert m.inputs == {"found": 26, "written": 26, "rejected": 0}
    assert [sum(m.counts[p][c] for p in m.parts) for c in NAMES] == [14, 8, 4]
    parts = defaultdict(set)
    for row in m.rows(list(m.parts)):
        parts[row.group].add(row.part)
    assert len(parts) == 13 and all(len(p) == 1 for p in parts.values())  # 13 patients, each in one fold
    assert m.options["group_key"] == "patient" and m.options["split"] == "train"
    if layout == "repo":  # load_dataset's arrow cache went under HF_HOME
        assert any((tmp_path / "hf_home").rglob("*.arrow"))


def test_a_hub_id_not_in_the_offline_cache_is_refused_in_one_line(tmp_path):
    done = _prepare(["--dataset", "hf:nobody/not-cached", "--out", str(tmp_path / "o")], tmp_path / "hf_home")
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "hf:nobody/not-cached" in errors[0] and "HF_HUB_OFFLINE" in errors[0], done.stderr


def test_a_missing_column_names_the_columns(saved, tmp_path):
    done = _prepare(["--dataset", f"hf:{saved / 'saved'}", "--label-key", "diagnosis", "--image-key", "img",
                     "--out", str(tmp_path / "o")], tmp_path / "hf_home")
    assert done.returncode == 2 and "no column 'diagnosis' for --label-key" in done.stderr and "'dx'" in done.stderr
