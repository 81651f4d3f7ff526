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
