"""Shared fixtures: one small digits-LT shard set per test session (prepare is seeded, so it is stable)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def digits_shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits_lt")
    subprocess.run([sys.executable, "-m", "adpm_dist.data.prepare", "--dataset", "digits_lt", "--out", str(out)],
                   check=True, capture_output=True, cwd=ROOT)
    return out
