"""Shards from HTTP, S3 and pipe:, against real servers on 127.0.0.1 (started and stopped here).

- the same batches (keys, labels, image tensors) as from the local directory, per rank (world 2);
- publishing: shards, index, manifest last; idempotent; --verify catches a corrupted shard;
- a missing shard fails when the manifest is loaded, naming it;
- a dropped connection is resumed (server restarted within the retries) or fails naming URL and key;
- credentials never printed.
Servers: `python -m http.server --bind 127.0.0.1` and moto's stand-alone S3 server, bound to
127.0.0.1 only, each in its own process group, killed by PID with a bounded wait.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faulty_http import faulty_server, new_plan
from process_group import end_session
import torch

from adpm_dist.data import build_transform, eval_batches, load_manifest, prepare_dataset, train_batches
from adpm_dist.data.location import RemotePath, RetryingStream, ShardReadError, as_location, redact
from adpm_dist.data.publish import _Target, publish, verify_remote
from adpm_dist.data.tario import TarSampleWriter, read_samples

WORLD = 2
LOOPBACK = "127.0.0.1"
pytest.importorskip("moto")
pytest.importorskip("s3fs")


# -- servers ---------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early ({proc.returncode}): {proc.args}")
        try:
            socket.create_connection((LOOPBACK, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    end_session(proc)
    raise RuntimeError(f"server did not listen on {LOOPBACK}:{port} within {timeout} s: {proc.args}")


def _start(args: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _wait_for_port(port, proc)
    return proc


def _http_server(directory: Path, port: int) -> subprocess.Popen:
    return _start([sys.executable, "-m", "http.server", "--bind", LOOPBACK, "--directory", str(directory), str(port)],
                  port)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("remote") / "shards"
    prepare_dataset("digits_lt", out, image_size=16, samples_per_shard=50, progress=False)
    return out


@pytest.fixture(scope="module")
def http_url(shards):
    port = _free_port()
    proc = _http_server(shards, port)
    yield f"http://{LOOPBACK}:{port}"
    end_session(proc)


@pytest.fixture(scope="module")
def s3_env():
    """moto's S3 server on loopback; AWS_* set for this module only (s3fs reads the standard variables)."""
    port = _free_port()
    proc = _start([sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)], port)
    env = {"AWS_ENDPOINT_URL": f"http://{LOOPBACK}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "not-a-real-secret", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem().mkdir("bucket")
        yield s3fs.S3FileSystem()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        end_session(proc)


@pytest.fixture(scope="module")
def s3_url(shards, s3_env):
    url = "s3://bucket/digits"
    publish(shards, url, log=lambda *_: None)
    return url


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setenv("ADPM_SHARD_RETRIES", "2")
    monkeypatch.setenv("ADPM_SHARD_BACKOFF", "0.05")


# -- same batches ----------------------------------------------------------------------------------

def _batches(loader) -> list[dict]:
    torch.manual_seed(0)  # the training transform's flips/rotations draw from torch's generator
    return list(loader)


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert [x["key"] for x in a] == [x["key"] for x in b]
    assert all(torch.equal(x["label"], y["label"]) for x, y in zip(a, b))
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(a, b))


def test_http_and_s3_stream_the_same_batches_as_local(shards, http_url, s3_url):
    tf_train, tf_eval = build_transform(16, train=True), build_transform(16, train=False)
    local = load_manifest(shards)
    for url in (http_url, s3_url):
        remote = load_manifest(url)
        assert isinstance(remote.root, RemotePath) and remote.index == local.index
        for rank in range(WORLD):
            split = dict(rank=rank, world_size=WORLD)
            _assert_same(_batches(train_batches(local, "train", 16, tf_train, epoch=1, seed=3, **split)),
                         _batches(train_batches(remote, "train", 16, tf_train, epoch=1, seed=3, **split)))
            _assert_same(_batches(eval_batches(local, "test", 32, tf_eval, **split)),
                         _batches(eval_batches(remote, "test", 32, tf_eval, **split)))


def test_s3_in_dataloader_workers(shards, s3_url):
    """Each DataLoader worker opens its own shards (fsspec and s3fs in a forked worker)."""
    tf = build_transform(16, train=False)
    kw = dict(epoch=2, seed=5, rank=1, world_size=WORLD, num_workers=2)
    _assert_same(_batches(train_batches(load_manifest(shards), "train", 16, tf, **kw)),
                 _batches(train_batches(load_manifest(s3_url), "train", 16, tf, **kw)))


def test_pipe_and_file_url(shards):
    tf = build_transform(16, train=False)
    local = _batches(eval_batches(load_manifest(shards), "test", 32, tf))
    _assert_same(local, _batches(eval_batches(load_manifest(f"pipe:cat {shards}/{{file}}"), "test", 32, tf)))
    _assert_same(local, _batches(eval_batches(load_manifest(f"file://{shards}"), "test", 32, tf)))
    with pytest.raises(ValueError, match=r"\{file\}"):
        load_manifest(f"pipe:cat {shards}/manifest.json")


# -- publishing ------------------------------------------------------------------------------------

def test_publish_order_idempotence_and_verify(shards, s3_env, monkeypatch, capsys):
    puts = []
    real_put = _Target.put
    monkeypatch.setattr(_Target, "put", lambda self, local, name: (puts.append(name), real_put(self, local, name)))
    url = "s3://bucket/order"
    first = publish(shards, url, log=lambda *_: None)
    n = len(load_manifest(shards).shards["train"]) + sum(len(v) for p, v in load_manifest(shards).shards.items()
                                                          if p != "train")
    assert first == {"uploaded": n, "skipped": 0, "deleted": 0}
    assert puts[-2:] == ["index.csv", "manifest.json"] and len(puts) == n + 2  # manifest last
    assert publish(shards, url, log=lambda *_: None) == {"uploaded": 0, "skipped": n, "deleted": 0}
    assert verify_remote(url, log=print) == 0

    victim = load_manifest(shards).shards["train"][0]["file"]
    s3_env.pipe_file(f"bucket/order/{victim}", b"not the shard")
    assert verify_remote(url, log=print) == 1
    assert f"{victim}: sha256 does not match" in capsys.readouterr().out
    assert publish(shards, url, log=lambda *_: None)["uploaded"] == 1  # size differs: uploaded again
    assert verify_remote(url, log=lambda *_: None) == 0


def test_publish_to_a_shared_directory(shards, tmp_path):
    target = tmp_path / "shared"
    n = sum(len(v) for v in load_manifest(shards).shards.values())
    assert publish(shards, f"file://{target}", log=lambda *_: None)["uploaded"] == n
    assert publish(shards, target, log=lambda *_: None) == {"uploaded": 0, "skipped": n, "deleted": 0}
    assert load_manifest(target).index == load_manifest(shards).index and verify_remote(target, log=print) == 0
    assert not list(target.glob(".*.tmp"))


def test_prepare_out_s3(tmp_path, s3_env):
    from adpm_dist.data.prepare import main

    args = ["--dataset", "digits_lt", "--n-max", "20", "--val-per-class", "0", "--image-size", "8",
            "--samples-per-shard", "20", "--quiet"]
    assert main(args + ["--out", "s3://bucket/prepared", "--stage", str(tmp_path / "stage"), "--verify"]) == 0
    assert load_manifest("s3://bucket/prepared").index == load_manifest(tmp_path / "stage").index
    assert main(["--verify", "--out", "s3://bucket/prepared"]) == 0  # --verify alone on a remote directory


def test_search_takes_shard_urls(tmp_path, s3_env):
    """tune's --shards: a URL is checked like a directory and handed to the trials unchanged."""
    from adpm_dist.tune.shards import resolve_shards

    folds = tmp_path / "folds"
    prepare_dataset("digits_lt", folds, image_size=8, folds=2, n_max=20, imbalance_ratio=2, val_per_class=0,
                    samples_per_shard=20, progress=False)
    publish(folds, "s3://bucket/folds", log=lambda *_: None)
    assert resolve_shards("digits_lt", "s3://bucket/folds", tmp_path / "search", None) == ("s3://bucket/folds", 2)
    assert resolve_shards("digits_lt", f"file://{folds}", tmp_path / "search", None) == (folds, 2)


def test_publish_refuses_http(shards, http_url):
    with pytest.raises(ValueError, match="document root"):
        publish(shards, http_url + "/copy")


# -- faults ----------------------------------------------------------------------------------------

def test_missing_shard_fails_at_load_naming_it(shards, tmp_path, s3_env):
    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    victim = load_manifest(shards).shards["test"][-1]["file"]
    (copy / victim).unlink()
    port = _free_port()
    proc = _http_server(copy, port)
    try:
        with pytest.raises(FileNotFoundError, match=f"do not exist.*{victim}"):
            load_manifest(f"http://{LOOPBACK}:{port}/")
    finally:
        end_session(proc)
    publish(shards, "s3://bucket/missing", log=lambda *_: None)
    s3_env.rm_file(f"bucket/missing/{victim}")
    with pytest.raises(FileNotFoundError, match=f"s3://bucket/missing/{victim}"):
        load_manifest("s3://bucket/missing")


def _big_shard(directory: Path, members: int = 4, size: int = 16 << 20) -> Path:
    """A shard of large samples: the server cannot have sent it all before it is stopped."""
    directory.mkdir()
    with open(directory / "big.tar", "wb") as f:
        w = TarSampleWriter(f)
        for i in range(members):
            w.write({"__key__": f"s{i}", "bin": bytes([i]) * size})
        w.close()
    return directory


def test_dropped_connection_resumes_at_the_byte_offset(tmp_path, monkeypatch):
    monkeypatch.setenv("ADPM_SHARD_RETRIES", "6")
    monkeypatch.setenv("ADPM_SHARD_BACKOFF", "0.2")
    directory = _big_shard(tmp_path / "big")
    port = _free_port()
    proc = _http_server(directory, port)
    try:
        samples = read_samples(f"http://{LOOPBACK}:{port}/big.tar")
        got = [next(samples)]
        end_session(proc)  # mid-shard: s1's 16 MiB are still on their way
        proc = _http_server(directory, port)  # back within the retries: the stream resumes
        got += list(samples)
    finally:
        end_session(proc)
    assert [s["__key__"] for s in got] == ["s0", "s1", "s2", "s3"]
    assert all(s["bin"] == bytes([i]) * (16 << 20) for i, s in enumerate(got))


def test_server_closing_mid_shard_fails_naming_url_and_key(tmp_path):
    # Deterministic, unlike stopping a server process (which races the transfer: a fast machine had
    # sent the whole shard first). The cut is inside s3: at most the socket buffers (a few MiB) lie
    # between what the reader consumed and the cut, and aiohttp may drop what it had buffered when
    # the connection fails, so the failure falls in s2 or s3, never in s0 or s1.
    directory = _big_shard(tmp_path / "big")
    member_bytes = 512 + (16 << 20)
    plan = new_plan(name="big.tar", times=99, cut=3 * member_bytes + 512 + (8 << 20))
    with faulty_server(directory, plan) as base:
        url = base.replace("http://", "http://user:hunter2@") + "/big.tar"
        with pytest.raises(ShardReadError) as err:
            list(read_samples(url))
    message = str(err.value)
    assert base.replace("http://", "http://***@") + "/big.tar" in message and "after 2 retries" in message
    assert re.search(r"while reading sample 's[23]'", message), message
    assert "hunter2" not in message


def test_server_stopped_mid_epoch_fails_clearly(shards, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    port = _free_port()
    proc = _http_server(copy, port)
    try:
        loader = train_batches(load_manifest(f"http://{LOOPBACK}:{port}"), "train", 8, build_transform(16, train=True),
                               epoch=0, seed=0, shuffle_buffer=1)
        batches = iter(loader)
        next(batches)
        end_session(proc)
        with pytest.raises(ShardReadError, match=rf"http://{LOOPBACK}:{port}/train-\d{{6}}\.tar.*after 2 retries"):
            list(batches)
    finally:
        end_session(proc)


class _Flaky(io.RawIOBase):
    """Serves `data`, raising ConnectionResetError once when the reader reaches `fail_at`."""

    def __init__(self, data: bytes, fail_at: int | None, seekable: bool):
        self.data, self.pos, self.fail_at, self._seekable = data, 0, fail_at, seekable

    def readable(self):
        return True

    def seekable(self):
        return self._seekable

    def seek(self, pos, whence=0):
        self.pos = pos
        return pos

    def read(self, n=-1):
        if self.fail_at is not None and self.pos >= self.fail_at:
            raise ConnectionResetError("peer went away")
        n = len(self.data) - self.pos if n < 0 else n
        if self.fail_at is not None:
            n = min(n, self.fail_at - self.pos)
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out


@pytest.mark.parametrize("seekable", [True, False])
def test_retrying_stream_resumes_exactly(seekable):
    data = bytes(range(256)) * 1000
    opened = []

    def opener():
        opened.append(1)
        return _Flaky(data, 70_001 if len(opened) == 1 else None, seekable)

    stream = io.BufferedReader(RetryingStream(opener, "s3://b/x.tar", retries=1, backoff=0), buffer_size=4096)
    assert stream.read() == data and len(opened) == 2


# -- secrets ---------------------------------------------------------------------------------------

def test_urls_print_without_secrets():
    assert redact("https://alice:s3cret@host:8443/d?X-Amz-Signature=abc&x=1") == "https://***@host:8443/d?X-Amz-Signature=***&x=***"
    assert redact("s3://bucket/prefix") == "s3://bucket/prefix"
    root = as_location("https://alice:s3cret@host/shards/")
    shard = root / "train-000000.tar"
    assert shard.url == "https://alice:s3cret@host/shards/train-000000.tar" and shard.name == "train-000000.tar"
    assert "s3cret" not in f"{root} {shard} {[shard]!r}"
    assert as_location(f"file://{Path.cwd()}") == Path.cwd()


def test_training_from_http_and_s3_gives_the_local_figures(shards, http_url, s3_url, tmp_path):
    """The whole loop (train, validate, select, evaluate) reads the same samples from every location."""
    from adpm_dist.config import load_config
    from adpm_dist.runtime.engine import train

    tiny = Path(__file__).resolve().parents[1] / "configs" / "digits_lt_tiny.yaml"
    figures = {}
    for name, where in (("local", shards), ("http", http_url), ("s3", s3_url)):
        cfg = load_config(tiny, [f"data.shards={where}", f"run.output_dir={tmp_path / name}", "data.image_size=16",
                                 "train.epochs=1", "diffusion.test_timesteps=3"])
        m = train(cfg)
        figures[name] = (m["macro_f1"], m["prior"]["macro_f1"], m["per_class"],
                         [row.get("loss") for row in m["history"]], m["data_fingerprint"])
    assert figures["http"] == figures["local"] and figures["s3"] == figures["local"]


def test_credentials_in_a_shards_url_are_refused_before_they_reach_a_config_file():
    from adpm_dist.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="data.shards: .*credentials"):
        load_config(None, ["data.shards=https://user:secret@127.0.0.1:1/d"])
