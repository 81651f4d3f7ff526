"""Fault suite, trials (docs/faults.md): a Ray worker node lost in the middle of a trial.

A two-node cluster on this machine: a head and a worker started with `ray start --address`, each with
its own temp dir, 1 CPU each, on 127.0.0.1. A 2-trial search runs on it; once the trial on the worker
node has a complete step checkpoint, the worker node's raylet is killed (SIGKILL). Tune retries the
trial on the head, engine.train continues it from its checkpoint (train.resume=auto in the stable trial
directory: this cluster's nodes share the filesystem, as docs/tune.md requires), and the search ends
with the results of the same search run without the kill.

Slow (two searches and a cluster, a few minutes on a loaded 2-core machine): it runs only with
ADPM_SLOW_TESTS=1, e.g. `ADPM_SLOW_TESTS=1 pytest -m faults tests/faults/test_tune_node_loss.py`.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from process_group import end_session, session_of, start_session
from test_tune_ray import BIN, ROOT, fold_shards, free_port, ray_env, read_rows, run_search, search_cmd  # noqa: F401

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900),
              pytest.mark.skipif(os.environ.get("ADPM_SLOW_TESTS") != "1", reason="slow: set ADPM_SLOW_TESTS=1")]


def node(args: list[str], temp: Path, env: dict) -> subprocess.Popen:
    """`ray start --block` in a session of its own (SIGTERM to it stops exactly that node)."""
    ports = [f"--{name}={free_port()}" for name in ("node-manager-port", "object-manager-port",
                                                    "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                    "metrics-export-port", "runtime-env-agent-port")]
    return start_session([str(BIN / "ray"), "start", "--block", "--num-cpus=1", "--object-store-memory=100000000",
                          f"--temp-dir={temp}", "--disable-usage-stats", *ports, *args],
                         cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_nodes(address: str, n: int, env: dict, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    probe = f"import ray; ray.init(address='{address}', logging_level='ERROR'); print(sum(x['Alive'] for x in ray.nodes()))"
    while time.monotonic() < deadline:
        done = subprocess.run([str(BIN / "python"), "-c", probe], env=env, capture_output=True, text=True, timeout=120)
        if done.returncode == 0 and done.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(2)
    raise AssertionError(f"the cluster at {address} did not reach {n} nodes")


def raylet_of(node_proc: subprocess.Popen) -> psutil.Process:
    for p in psutil.Process(node_proc.pid).children(recursive=True):
        if "raylet" in " ".join(p.cmdline()):
            return p
    raise AssertionError("no raylet under the worker node's `ray start`")


def metrics_of(out: Path) -> dict:
    return {(r["alpha"], r["beta"], r["fold"]): (r["status"], r["macro_f1"]) for r in read_rows(out / "cv_results.csv")}


def test_a_lost_worker_node_is_survived_with_the_same_results(tmp_path, fold_shards):
    env = ray_env(tmp_path) | {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
                               "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}  # "0" marks a one-node cluster
    base = ["--alphas", "1/6", "--betas", "5", "--shards", str(fold_shards), "--max-failures", "3",
            "--cpus-per-trial", "1", "train.checkpoint_every_steps=2"]
    ray_tmp = Path(f"/tmp/adpm_ray_nl_{os.getpid()}")
    reference = run_search(search_cmd(tmp_path / "reference", *base, "--ray-temp-dir", str(ray_tmp / "ref")), env, 600)
    assert reference.returncode == 0, reference.stdout[-3000:]
    gcs = free_port()
    address = f"127.0.0.1:{gcs}"
    head = node(["--head", f"--port={gcs}", "--node-ip-address=127.0.0.1", "--include-dashboard=false"],
                ray_tmp / "head", env)
    worker = None
    try:
        wait_for_nodes(address, 1, env)
        worker = node([f"--address={address}", "--node-ip-address=127.0.0.1"], ray_tmp / "worker", env)
        wait_for_nodes(address, 2, env)
        out = tmp_path / "exp"
        search = start_session(search_cmd(out, *base, "--address", address), cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline, victim = time.monotonic() + 400, None
            while victim is None:  # the trial whose process runs on the worker node, with a complete checkpoint
                assert time.monotonic() < deadline and search.poll() is None, "no checkpoint on the worker node"
                for attempts in out.glob("trials/*/attempts.jsonl"):
                    pid = json.loads(attempts.read_text().splitlines()[0])["pid"]
                    if session_of(pid) == worker.pid and list(attempts.parent.glob("checkpoints/step_*/trainer_state.json")):
                        victim = attempts.parent
                time.sleep(0.2)
            assert not (victim / "metrics.json").exists()
            raylet_of(worker).send_signal(signal.SIGKILL)  # the node is lost: its raylet and then its workers
            stdout, _ = search.communicate(timeout=500)
        finally:
            end_session(search, grace=10)
        assert search.returncode == 0, stdout[-4000:]
    finally:
        for proc in (worker, head):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                end_session(proc, grace=60)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    attempts = [json.loads(line) for line in (victim / "attempts.jsonl").read_text().splitlines()]
    assert len(attempts) >= 2
    assert "resumed from" in (victim / "train.log").read_text().split(": attempt 2,")[1]
    assert metrics_of(out) == metrics_of(tmp_path / "reference")  # every trial done, the same figures
