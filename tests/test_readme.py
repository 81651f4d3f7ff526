"""The README's "your own images" quick start, run as written on a small long-tailed folder (mixed
PNG / JPEG / grayscale / RGBA, names with spaces and parentheses, one text file): the venv's
activation line, prepare with --test-root and --folds, and the one-minute smoke run, in one bash
script, with no refusal. `make setup` (the venv exists already) and the study (Ray, minutes) are
left out; the study's own shard check runs on the prepared shards instead (~20 s in all)."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from process_group import run_session

ROOT = Path(__file__).resolve().parents[1]
SLOW_LINES = ("make ", "python tune/study.py", "accelerate launch launch/train.py --config runs/study_")


def quick_start_block(readme: str) -> str:
    """The fenced bash block of the README's quick start that prepares an image folder."""
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", quick, re.S)
    found = [b for b in blocks if "--dataset imagefolder" in b]
    assert len(found) == 1, f"expected one imagefolder block in the README's quick start, found {len(found)}"
    return found[0]


def make_folder(root: Path, sizes: dict[str, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for c, (name, n) in enumerate(sizes.items()):
        (root / name).mkdir(parents=True)
        for j in range(n):
            im = Image.fromarray((rng.random((30, 44, 3)) * 60 + 50 * c).astype("uint8"))
            [lambda: im.save(root / name / f"img {j}.png"), lambda: im.convert("L").save(root / name / f"img{j}.jpg"),
             lambda: im.convert("RGBA").save(root / name / f"x({j}).png")][j % 3]()


def test_the_quick_start_runs_as_written(tmp_path):
    if sys.prefix == sys.base_prefix:
        pytest.skip("the quick start activates a virtual environment; this Python is not one")
    block = quick_start_block((ROOT / "README.md").read_text())
    kept = [ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith(SLOW_LINES)]
    setup = [ln for ln in block.splitlines() if ln.startswith("make setup && ")]
    assert len(setup) == 1, "the block no longer sets up and activates the venv in its first line"
    activate = setup[0].split("&&", 1)[1]  # `. .venv/bin/activate  # ...`
    sizes = {"nevus (benign)": 12, "mel anoma": 8, "bcc": 5, "rare one": 3}
    make_folder(tmp_path / "my_images", sizes, 0)
    make_folder(tmp_path / "my_test_images", {k: max(1, v // 2) for k, v in sizes.items()}, 1)
    (tmp_path / "my_images" / "bcc" / "notes.txt").write_text("not an image")
    for name in ("configs", "launch", "tune"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / ".venv").symlink_to(sys.prefix)
    script = "set -e\n" + activate + "\n" + "\n".join(kept) + "\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "OMP_NUM_THREADS": "1"}
    done = run_session(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "written + 1 rejected" in out and "my_images/bcc/notes.txt: unsupported file type .txt" in out, out[-2000:]
    assert (tmp_path / "runs" / "smoke" / "metrics.json").is_file(), out[-2000:]
    log = (tmp_path / "runs" / "smoke" / "train.log").read_text()  # the run's own log, no bar frames
    warmup = [ln for ln in log.splitlines() if ln.startswith("epoch 1/")]
    assert "step 1 |" in log and "\r" not in log and len(warmup) == 1 and "prior warm-up" in warmup[0], log
    assert " | lr 0 |" not in warmup[0]  # the prior's LR while the prior trains

    from adpm_dist.data.manifest import load_manifest
    from adpm_dist.tune.shards import check_folds, check_shard_counts

    manifest = load_manifest(tmp_path / "data" / "mine")
    assert check_folds(manifest, 5, "imagefolder") == 5  # what tune/study.py --shards data/mine --folds 5 checks
    check_shard_counts(manifest, 1, "imagefolder")  # one training process per trial: small folds are not refused
    assert "test" in manifest.parts
