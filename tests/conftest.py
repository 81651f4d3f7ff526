"""Shared fixtures: one small digits-LT shard set per test session (prepare is seeded, so it is stable).

Tests that launch processes start them through tests/process_group.py (a session of their own,
killed as a whole on timeout), never with a bare subprocess.run/Popen.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from process_group import run_session

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def digits_shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits_lt")
    run_session([sys.executable, "-m", "adpm_dist.data.prepare", "--dataset", "digits_lt", "--out", str(out)],
                check=True, capture_output=True, cwd=ROOT, timeout=600)
    return out


@pytest.fixture(scope="session")
def fold_only_shards(tmp_path_factory) -> Path:
    """Fold-only shards as PAD-UFES-20, SCIN and Hyper-Kvasir come (fold0..fold2; no `test`, no `val`),
    prepared from a small image folder: classes head / mid / tail of 24 / 15 / 9 images, 32 px."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("image_folder")
    rng = np.random.default_rng(0)
    for level, (name, n) in enumerate((("head", 24), ("mid", 15), ("tail", 9))):
        (root / name).mkdir()
        for i in range(n):  # class-dependent brightness: learnable, so runs do not all score 0
            pixels = np.clip(rng.normal(60 + 70 * level, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}_{i:02d}.png")
    out = tmp_path_factory.mktemp("fold_only")
    run_session([sys.executable, "-m", "adpm_dist.data.prepare", "--dataset", "imagefolder", "--root", str(root),
                 "--out", str(out), "--folds", "3", "--image-size", "32", "--quiet"],
                check=True, capture_output=True, cwd=ROOT, timeout=300)
    return out


@pytest.fixture
def one_torch_thread():
    """Batched resampling on a busy 2-core CPU: more intra-op threads only wait for each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def private_price_book(tmp_path, monkeypatch):
    """Every test's own price book (adpm_dist/tune/price_book.py): never the user's ~/.cache, and no price
    carried from one test to the next."""
    monkeypatch.setenv("ADPM_PRICE_BOOK", str(tmp_path / "price_book.jsonl"))
