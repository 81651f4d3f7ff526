"""The noise search on real Ray clusters: end to end, a killed trial retried, a job on a loopback head.

Each test runs its Ray in its own process session (tests/process_group.py) with its own temp dir under
/tmp/adpm_ray_<pid>_*, and afterwards kills whatever is left in that session only: never `ray stop`,
which would end every Ray process on the machine. Trials are tiny (configs/digits_lt_tiny.yaml, one
warm-up + one joint epoch, 5 sampling steps); most of their time is the torch/timm import.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from process_group import end_session, run_session, session_of, session_processes, start_session

from adpm_dist.config import load_config

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FAST = ["train.epochs=1", "train.prior_warmup_epochs=1", "train.warmup_epochs=1", "diffusion.test_timesteps=5"]
OUTPUTS = ("cv_results.csv", "summary.md", "heatmap.png", "best.yaml")

pytestmark = pytest.mark.timeout(420)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env(tmp_path: Path) -> dict:
    return {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
            "HF_HOME": str(tmp_path / "hf"), "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture()
def ray_tmp():
    """A short temp dir of our own for Ray's sockets and logs (Unix socket paths must stay short)."""
    path = Path(f"/tmp/adpm_ray_{os.getpid()}_{time.monotonic_ns() % 10**6}")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def fold_shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits_2fold")
    run_session([sys.executable, "-m", "adpm_dist.data.prepare", "--dataset", "digits_lt", "--out", str(out),
                 "--folds", "2", "--quiet"], check=True, capture_output=True, cwd=ROOT, timeout=300)
    return out


def search_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "tune/search_noise.py", "--dataset", "digits_lt", "--folds", "2", "--output", str(out),
            "--config", "configs/digits_lt_tiny.yaml", "--progress-interval", "10", *extra, *FAST]


def run_search(cmd: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    proc = start_session(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = ""
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        left = end_session(proc, grace=10)
    assert not left, f"processes left behind by the search: {left}"  # ray.shutdown() stopped its cluster
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


# Starts the local cluster exactly as tune/search_noise.py does, with a worker per CPU up, then waits for a line.
LOCAL_CLUSTER = """
import os, sys
from adpm_dist.tune.search import ClusterOptions, Resources, connect
connect(ClusterOptions(temp_dir=sys.argv[1]), Resources(cpus_per_trial=1), n_trials=2)
import ray
@ray.remote
def pid():
    return os.getpid()
print(sorted(set(ray.get([pid.remote() for _ in range(4)]))), "ready", flush=True)
sys.stdin.readline()
ray.shutdown()
"""


def test_local_cluster_listens_on_loopback_only(tmp_path, ray_tmp):
    """Every socket a process of the search's local cluster listens on is bound to a loopback address."""
    from adpm_dist.tune.search import is_loopback, listening_sockets

    env = ray_env(tmp_path) | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}  # the search must override a stray 1
    proc = start_session([sys.executable, "-c", LOCAL_CLUSTER, str(ray_tmp)], cwd=ROOT, env=env, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        lines = []
        deadline = time.monotonic() + 180
        while not (lines and lines[-1].rstrip().endswith("ready")):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)[-3000:]
            lines.append(proc.stdout.readline())
        sockets = listening_sockets(session_processes(proc.pid))
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        proc.wait(timeout=60)
    finally:
        left = end_session(proc, grace=10)
    names = {name for _, name, _, _ in sockets}
    assert {"gcs_server", "raylet"} <= names, sockets  # the check saw the cluster, not nothing
    assert len(sockets) >= 5, sockets
    exposed = [s for s in sockets if not is_loopback(s[2])]
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert not left, f"processes left behind: {left}"


def test_loopback_addresses():
    from adpm_dist.tune.search import is_loopback

    assert all(is_loopback(a) for a in ("127.0.0.1", "127.0.1.1", "::1", "::ffff:127.0.0.1"))
    assert not any(is_loopback(a) for a in ("0.0.0.0", "::", "192.0.2.2", "::ffff:10.0.0.1", "fe80::1%eth0"))


def read_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_search_end_to_end(tmp_path, ray_tmp):
    """The issue's 'done when' command, shards prepared by the search itself."""
    out = tmp_path / "exp"
    start = time.monotonic()
    res = run_search(search_cmd(out, "--alphas", "0,1/6", "--betas", "5", "--ray-temp-dir", str(ray_tmp)),
                     ray_env(tmp_path), timeout=360)
    took = time.monotonic() - start
    assert res.returncode == 0, res.stdout[-4000:]
    print(f"search of 4 tiny trials: {took:.0f} s")
    for name in OUTPUTS:
        assert (out / name).is_file(), name

    manifest = json.loads((out / "shards" / "manifest.json").read_text())
    assert list(manifest["parts"]) == ["fold0", "fold1", "val", "test"]
    rows = read_rows(out / "cv_results.csv")
    assert [(r["alpha_label"], r["fold"], r["status"]) for r in rows] == [("0", "0", "done"), ("0", "1", "done"),
                                                                         ("1/6", "0", "done"), ("1/6", "1", "done")]
    for r in rows:  # each trial evaluated its own fold, never the fixed test part
        metrics = json.loads((out / "trials" / r["source_trial"] / "metrics.json").read_text())
        assert metrics["eval_part"] == f"fold{r['fold']}"
        assert metrics["n_samples"] == manifest["parts"][f"fold{r['fold']}"]["num_samples"]
    assert "| alpha \\ beta | 5 |" in (out / "summary.md").read_text()
    best = load_config(out / "best.yaml")
    assert best.data.eval_part == "test" and best.noise.beta == 5 and best.train.epochs == 1
    assert "4 trials: 4 finished" in res.stdout and "best: alpha=" in res.stdout  # live table, then summary


def test_nested_search_on_fold_only_shards(tmp_path, ray_tmp, fold_only_shards):
    """Fold-only shards at a path YAML text would cut (" #", spaces, non-ASCII): nested CV end to end (2 grid
    points x 3 folds: 6 CV + 12 inner trials); every trial ran on that path verbatim and only on its own
    parts; protocol.json never scores a figure on a part that chose it."""
    shards = tmp_path / "data #2" / "fold only ünï ✓"
    shutil.copytree(fold_only_shards, shards)
    out = tmp_path / "exp #1"
    cmd = [sys.executable, "tune/search_noise.py", "--dataset", "imagefolder", "--shards", str(shards),
           "--alphas", "0,1/2", "--betas", "5", "--output", str(out), "--config", "configs/digits_lt_tiny.yaml",
           "--progress-interval", "30", "--ray-temp-dir", str(ray_tmp), *FAST]
    res = run_search(cmd, ray_env(tmp_path), timeout=360)
    assert res.returncode == 0, res.stdout[-4000:]
    assert "18 trials: 18 finished" in res.stdout and "nested CV estimate (publish this)" in res.stdout
    for trial in (out / "trials").iterdir():
        cfg = load_config(trial / "config.yaml")
        assert cfg.data.shards == str(shards.resolve()) and cfg.run.output_dir == str(trial)
        metrics = json.loads((trial / "metrics.json").read_text())
        outer = trial.name.partition("_")[0] if trial.name.startswith("outer") else None
        hidden = {metrics["eval_part"]} | ({f"fold{outer[5:]}"} if outer else set())
        assert not hidden & set(cfg.data.train_parts), trial.name
    figures = json.loads((out / "protocol.json").read_text())
    for f in figures:
        assert f["independent"] and not set(f.get("selected_on", [])) & set(f.get("evaluated_on", [])), f
    assert "## Estimate: nested CV" in (out / "summary.md").read_text()
    assert "NOT an estimate" in (out / "best.yaml").read_text()


def test_killed_trial_is_retried(tmp_path, ray_tmp, fold_shards):
    """SIGKILL a trial process after its first resumable checkpoint: Tune retries it, engine resumes, all finish."""
    out = tmp_path / "exp"
    cmd = search_cmd(out, "--alphas", "1/6", "--betas", "5", "--shards", str(fold_shards), "--max-failures", "2",
                     "--ray-temp-dir", str(ray_tmp), "train.checkpoint_every_steps=2")
    proc = start_session(cmd, cwd=ROOT, env=ray_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    victim = out / "trials" / "alpha1-6_beta5_fold0"
    try:
        deadline = time.monotonic() + 240
        while not list(victim.glob("checkpoints/step_*/trainer_state.json")):  # a complete checkpoint
            assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint before the deadline"
            time.sleep(0.2)
        assert not (victim / "metrics.json").exists()  # still training
        pid = json.loads((victim / "attempts.jsonl").read_text().splitlines()[0])["pid"]
        assert session_of(pid) == proc.pid  # a trial process of this test's cluster, nobody else's
        os.kill(pid, signal.SIGKILL)
        stdout, _ = proc.communicate(timeout=300)
    finally:
        left = end_session(proc, grace=10)
    assert not left, f"processes left behind: {left}"
    assert proc.returncode == 0, stdout[-4000:]
    attempts = [json.loads(line) for line in (victim / "attempts.jsonl").read_text().splitlines()]
    assert len(attempts) == 2 and attempts[1]["pid"] != pid
    assert "retrying" in stdout
    second = (victim / "train.log").read_text().split(": attempt 2,")[1]
    assert "resumed from" in second  # train.resume=auto in the stable run.output_dir
    assert [r["status"] for r in read_rows(out / "cv_results.csv")] == ["done", "done"]
    for name in OUTPUTS:
        assert (out / name).is_file(), name


def test_job_submission_to_loopback_head(tmp_path, ray_tmp, fold_shards):
    """`ray start --head` on 127.0.0.1, then `ray job submit --working-dir . -- python tune/search_noise.py ...`."""
    env = ray_env(tmp_path)
    gcs, dashboard = free_port(), free_port()
    ports = {f"--{name}": free_port() for name in ("ray-client-server-port", "dashboard-agent-listen-port",
                                                   "dashboard-agent-grpc-port", "metrics-export-port",
                                                   "runtime-env-agent-port", "node-manager-port", "object-manager-port")}
    # --block keeps `ray start` in the foreground; SIGTERM to it stops exactly the cluster it started.
    head = start_session([str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2",
                          "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--temp-dir={ray_tmp}",
                          "--object-store-memory=100000000",
                          "--disable-usage-stats", *(f"{k}={v}" for k, v in ports.items())],
                         cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tmp_path / "exp"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", dashboard), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None, "ray start --head exited"
                time.sleep(1)
        job = run_session([str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dashboard}",
                           "--working-dir", ".", "--",
                           *["python" if a == sys.executable else a for a in search_cmd(out, "--alphas", "1/6",
                             "--betas", "5", "--shards", str(fold_shards))]],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    finally:
        head.send_signal(signal.SIGTERM)
        left = end_session(head, grace=60)  # `ray start --block` terminates its cluster, asynchronously
    assert job.returncode == 0 and "succeeded" in job.stdout, job.stdout[-4000:] + job.stderr[-2000:]
    assert "2 trials: 2 finished" in job.stdout  # the driver's progress table, streamed by the job logs
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    assert [r["status"] for r in read_rows(out / "cv_results.csv")] == ["done", "done"]
    assert not left, f"processes left behind by the head: {left}"
