"""Fault injection on shards, as the training and evaluation loaders read them: local files, HTTP and S3.

The promise each test checks (docs/faults.md, "Data faults"): a shard cut short (at a sample
boundary, between a sample's members, inside a member or a header) stops the run naming the shard,
the byte and how many of the manifest's samples are missing; it is never read as a smaller shard.
A corrupted image is skipped and named in training, and stops evaluation naming it. A connection
that ends early is resumed where possible (then nothing differs from an unbroken read) and
otherwise fails naming the URL; a server that stalls fails after ADPM_SHARD_TIMEOUT, not never.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from faulty_http import faulty_server, new_plan
from process_group import end_session

from adpm_dist.data import build_transform, eval_batches, load_manifest, prepare_dataset, train_batches
from adpm_dist.data.location import ShardReadError
from adpm_dist.data.publish import publish
from adpm_dist.data.stream import ShardIdentityError
from adpm_dist.data.tario import ShardCountError, TruncatedShard, read_samples

pytestmark = pytest.mark.faults
LOOPBACK = "127.0.0.1"
TF = build_transform(8, train=False)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """A small train part (6 shards of 10 samples), 8 px."""
    out = tmp_path_factory.mktemp("faults") / "shards"
    prepare_dataset("digits_lt", out, image_size=8, n_max=12, imbalance_ratio=2, val_per_class=0,
                    samples_per_shard=10, progress=False)
    return out


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setenv("ADPM_SHARD_RETRIES", "2")
    monkeypatch.setenv("ADPM_SHARD_BACKOFF", "0.01")


def _copy(shards: Path, to: Path) -> Path:
    shutil.copytree(shards, to)
    return to


def _members(shard: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(shard) as tar:
        return tar.getmembers()  # per sample: KEY.json, then KEY.png


# sample k = members 2k (json) and 2k+1 (png). (cut, samples delivered): the sample being read when
# the shard ends is never delivered, even if complete (nothing says no member of it followed)
CUTS = {
    "at a sample boundary": lambda m, k: (m[2 * k].offset, k - 1),
    "between a sample's members": lambda m, k: (m[2 * k + 1].offset, k),
    "inside an image member": lambda m, k: (m[2 * k + 1].offset_data + m[2 * k + 1].size // 2, k),
    "inside a tar header": lambda m, k: (m[2 * k].offset + 100, k - 1),
    "in a member's padding": lambda m, k: (m[2 * k + 1].offset_data + m[2 * k + 1].size + 1, k),
}


def _all_batches(manifest, part="train"):
    n = manifest.num_samples[part]
    return list(train_batches(manifest, part, n, TF, epoch=0, seed=0, shuffle_buffer=1))  # one batch: every shard read


@pytest.mark.parametrize("where", list(CUTS))
def test_a_truncated_local_shard_is_named_with_what_is_missing(shards, tmp_path, where):
    out = _copy(shards, tmp_path / "cut")
    manifest = load_manifest(out)
    shard, k = Path(manifest.parts["train"][2]), 3
    cut, delivered = CUTS[where](_members(shard), k)
    shard.write_bytes(shard.read_bytes()[:cut])
    for read in (lambda: _all_batches(manifest), lambda: list(eval_batches(manifest, "train", 16, TF))):
        with pytest.raises(TruncatedShard) as err:
            read()
        message = str(err.value)
        assert message.startswith(f"{shard}: truncated at byte {cut} ")
        assert f"read: the first {delivered} of its 10 samples" in message and f"not read: {10 - delivered}" in message
        assert "no image member" not in message


def test_a_shard_missing_its_end_marker_is_not_complete(shards, tmp_path):
    """Every member is there, only the end-of-archive blocks are cut: still never read as complete."""
    out = _copy(shards, tmp_path / "cut")
    manifest = load_manifest(out)
    shard = Path(manifest.parts["train"][0])
    last = _members(shard)[-1]
    shard.write_bytes(shard.read_bytes()[:last.offset_data + last.size + (-last.size % 512)])
    with pytest.raises(TruncatedShard, match=rf"{shard}: truncated at byte \d+ \(between members\)"):
        _all_batches(manifest)


def test_a_shard_with_fewer_samples_than_its_manifest_is_named(shards, tmp_path):
    """A complete tar with one sample less (replaced or edited): named with both counts."""
    out = _copy(shards, tmp_path / "short")
    manifest = load_manifest(out)
    shard = Path(manifest.parts["train"][1])
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()][2:]  # drop sample 0
    with tarfile.open(shard, "w") as tar:
        for m, data in members:
            tar.addfile(m, io.BytesIO(data))
    with pytest.raises(ShardCountError, match=rf"{shard}: 9 samples, its manifest lists 10"):
        _all_batches(manifest)
    with pytest.raises(ShardCountError, match=rf"{shard}: 9 samples, its manifest lists 10"):
        list(eval_batches(manifest, "train", 16, TF))


def _flip_image_bytes(shard: Path, sample: int) -> str:
    """Overwrite the middle of sample `sample`'s image with 0xFF bytes; its key."""
    member = _members(shard)[2 * sample + 1]
    data = bytearray(shard.read_bytes())
    start = member.offset_data + 20
    data[start:start + member.size // 2] = b"\xff" * (member.size // 2)
    shard.write_bytes(bytes(data))
    return member.name.split(".")[0]


def test_a_corrupted_image_is_skipped_and_named_in_training_and_stops_evaluation(shards, tmp_path):
    out = _copy(shards, tmp_path / "corrupt")
    manifest = load_manifest(out)
    shard = Path(manifest.parts["train"][4])
    key = _flip_image_bytes(shard, 5)
    batches = _all_batches(manifest)
    skipped = [s for b in batches for s in b["skipped"]]
    assert [(s["shard"], s["key"]) for s in skipped] == [(str(shard), key)]
    seen = {k for b in batches for k in b["key"]}
    assert seen | {key} == {r.key for r in manifest.rows("train")}  # nothing else lost
    with pytest.raises(Exception, match=f"bad sample '{key}' in shard {shard}"):
        list(eval_batches(manifest, "train", 16, TF))


# -- HTTP --------------------------------------------------------------------------------------------

@pytest.fixture
def faulty_http(shards, tmp_path):
    """(base URL, plan, shard directory): a loopback server whose plan the test sets."""
    directory = _copy(shards, tmp_path / "served")
    plan = new_plan()
    with faulty_server(directory, plan) as url:
        yield url, plan, directory


def _fault(plan: dict, directory: Path, *, times: int, length: bool, stall: bool = False) -> tuple[str, int]:
    name = sorted(p.name for p in directory.glob("train-*.tar"))[1]
    member = _members(directory / name)[7]  # sample 3's image
    plan.update(name=name, times=times, length=length, stall=stall, served=0,
                cut=member.offset_data + member.size // 2)
    return name, plan["cut"]


@pytest.mark.parametrize("length", [True, False], ids=["with-content-length", "without-content-length"])
def test_http_body_cut_once_is_resumed_and_nothing_differs(faulty_http, shards, length):
    url, plan, directory = faulty_http
    name, _ = _fault(plan, directory, times=1, length=length)
    got = [(s["__key__"], s["png"]) for s in read_samples(f"{url}/{name}", 10)]
    assert plan["served"] == 1  # the fault did happen
    assert got == [(s["__key__"], s["png"]) for s in read_samples(directory / name)]


def test_http_body_without_content_length_always_cut_is_named(faulty_http):
    url, plan, directory = faulty_http
    name, cut = _fault(plan, directory, times=99, length=False)
    manifest = load_manifest(url)
    with pytest.raises(TruncatedShard) as err:
        _all_batches(manifest)
    assert str(err.value).startswith(f"{url}/{name}: truncated at byte {cut} (inside member ")
    assert "read: the first 3 of its 10 samples" in str(err.value)
    assert plan["served"] == 3  # the first read and ADPM_SHARD_RETRIES=2 re-opens


def test_http_body_with_content_length_always_cut_is_named(faulty_http):
    url, plan, directory = faulty_http
    name, _ = _fault(plan, directory, times=99, length=True)
    # Where it failed depends on timing: aiohttp raises a failed body's error before handing out what
    # it had buffered, so a client that reads after the close has seen nothing of this try.
    with pytest.raises(ShardReadError, match=rf"{url}/{name}: stream failed at byte \d+ after 2 retries.*"
                                             r"(while reading sample '[^']+'|before its first sample)$"):
        _all_batches(load_manifest(url))


def test_a_stalled_http_server_times_out_naming_the_url(faulty_http, monkeypatch):
    url, plan, directory = faulty_http
    name, _ = _fault(plan, directory, times=99, length=True, stall=True)
    manifest = load_manifest(url)  # at the default timeout: a loaded machine's HEADs may take > 0.5 s
    monkeypatch.setenv("ADPM_SHARD_TIMEOUT", "0.5")
    monkeypatch.setenv("ADPM_SHARD_RETRIES", "1")
    start = time.monotonic()
    with pytest.raises(ShardReadError, match=rf"{url}/{name}: stream failed at byte \d+ after 1 retries \(.*Timeout"):
        _all_batches(manifest)
    assert time.monotonic() - start < 20


def test_a_failed_existence_check_is_retried_and_never_called_missing(faulty_http, monkeypatch):
    """fsspec reports any failed HEAD as FileNotFoundError; a 503 or a timeout is not a missing shard."""
    monkeypatch.setenv("ADPM_SHARD_BACKOFF", "0.01")
    monkeypatch.setenv("ADPM_SHARD_RETRIES", "1")
    url, plan, directory = faulty_http
    name = sorted(p.name for p in directory.glob("train-*.tar"))[1]
    plan.update(name=name, status=503, times=2, served=0)  # the first check's HEAD and GET fail
    assert load_manifest(url).num_samples == load_manifest(directory).num_samples
    assert plan["served"] == 2
    plan.update(times=99, served=0)
    with pytest.raises(ShardReadError, match=rf"^{url}/{name}: could not check that it exists after 1 retries \(HTTP 503\)$"):
        load_manifest(url)
    plan.update(status=404, served=0)
    with pytest.raises(FileNotFoundError, match=rf"lists shards that do not exist: \['{url}/{name}'\]"):
        load_manifest(url)


# -- S3 (moto's server on loopback) -----------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on loopback and AWS_* pointing at it, for this module's S3 tests only."""
    pytest.importorskip("moto")
    s3fs = pytest.importorskip("s3fs")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    env = {"AWS_ENDPOINT_URL": f"http://{LOOPBACK}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "not-a-real-secret", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((LOOPBACK, port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.05)
        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem().mkdir("faults")
        yield "s3://faults"
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        end_session(proc)


def test_truncated_and_corrupted_shards_on_s3(shards, s3, tmp_path):
    bucket = s3
    local = _copy(shards, tmp_path / "s3copy")
    manifest = load_manifest(local)
    cut_shard, bad_shard = Path(manifest.parts["train"][1]), Path(manifest.parts["train"][3])
    key = _flip_image_bytes(bad_shard, 2)
    publish(local, f"{bucket}/corrupt", log=lambda *_: None)
    batches = _all_batches(load_manifest(f"{bucket}/corrupt"))
    assert [(s["shard"], s["key"]) for b in batches for s in b["skipped"]] == [(f"{bucket}/corrupt/{bad_shard.name}", key)]

    cut, _ = CUTS["at a sample boundary"](_members(cut_shard), 4)
    cut_shard.write_bytes(cut_shard.read_bytes()[:cut])
    publish(local, f"{bucket}/cut", log=lambda *_: None)
    with pytest.raises(TruncatedShard) as err:
        _all_batches(load_manifest(f"{bucket}/cut"))
    assert str(err.value).startswith(f"{bucket}/cut/{cut_shard.name}: truncated at byte {cut} (between members)")
    assert "read: the first 3 of its 10 samples (up to " in str(err.value) and "not read: 7" in str(err.value)


def test_a_shard_copied_over_another_is_named_in_training_and_evaluation(shards, tmp_path):
    """The same count, other keys: train-000000.tar copied over train-000001.tar would train 10 samples
    twice per epoch and 10 never (the counts alone cannot see it)."""
    out = _copy(shards, tmp_path / "copied")
    manifest = load_manifest(out)
    first, second = (Path(p) for p in manifest.parts["train"][:2])
    shutil.copyfile(first, second)
    with pytest.raises(ShardIdentityError, match=rf"{second}: sample '.*' is not one of the 10 that index.csv lists "
                                                 r"for this shard \(a shard copied over another, or swapped\?\)"):
        _all_batches(manifest)
    with pytest.raises(ShardIdentityError, match=rf"{second}: sample"):
        list(eval_batches(manifest, "train", 16, TF))


def test_a_relabelled_sample_is_named_with_both_labels(shards, tmp_path):
    out = _copy(shards, tmp_path / "relabelled")
    manifest = load_manifest(out)
    shard = Path(manifest.parts["train"][2])
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    meta, data = members[0]  # sample 0's KEY.json
    old = json.loads(data)["label"]
    data = json.dumps(json.loads(data) | {"label": (old + 1) % manifest.num_classes}).encode()
    meta.size = len(data)
    with tarfile.open(shard, "w") as tar:
        for m, d in [(meta, data), *members[1:]]:
            tar.addfile(m, io.BytesIO(d))
    key = meta.name.split(".")[0]
    with pytest.raises(ShardIdentityError, match=rf"{shard}: sample '{key}' has label {(old + 1) % manifest.num_classes}, "
                                                 rf"index.csv says {old}"):
        _all_batches(manifest)
