"""Bad data at train and evaluation time: a hand-corrupted shard (a truncated image, a label out of
range) is named by shard, key and reason; training skips and lists it with equal batch counts on
every rank, evaluation stops before writing metrics, and verification at start names the shard."""
from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from adpm_dist.config import load_config
from adpm_dist.data.manifest import load_manifest, verify_shards
from adpm_dist.data.stream import BadSample, eval_batches, train_batches
from adpm_dist.data.transforms import build_transform

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "digits_lt_tiny.yaml"


def corrupt(shard: Path) -> tuple[str, str]:
    """Rewrite ``shard`` with its first image truncated and its second sample's label out of range;
    the two keys."""
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
    keys = sorted({m.name.rsplit(".", 1)[0] for m, _ in members})
    truncated, mislabelled = keys[0], keys[1]
    with tarfile.open(shard, "w") as tar:
        for member, data in members:
            key, ext = member.name.rsplit(".", 1)
            if key == truncated and ext in ("png", "jpg", "jpeg"):
                data = data[: len(data) // 2]
            if key == mislabelled and ext == "json":
                data = json.dumps(json.loads(data) | {"label": 99}).encode()
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return truncated, mislabelled


@pytest.fixture(scope="module")
def bad_shards(digits_shards, tmp_path_factory) -> tuple[Path, Path, tuple[str, str]]:
    out = tmp_path_factory.mktemp("bad") / "shards"
    shutil.copytree(digits_shards, out)
    shard = load_manifest(out).parts["train"][0]
    return out, Path(shard), corrupt(Path(shard))


def test_training_skips_and_names_bad_samples_with_equal_batches_on_two_ranks(bad_shards):
    out, shard, keys = bad_shards
    manifest, tf = load_manifest(out), build_transform(32, train=False)
    per_rank, skipped = [], []
    for rank in (0, 1):
        loader = train_batches(manifest, "train", 16, tf, epoch=0, seed=0, rank=rank, world_size=2)
        batches = list(loader)
        assert all(len(b["key"]) == 16 for b in batches)
        per_rank.append(len(batches))
        skipped += [s for b in batches for s in b["skipped"]]
    assert per_rank[0] == per_rank[1] == len(loader)
    assert sorted(s["key"] for s in skipped) == sorted(keys)
    assert all(s["shard"] == str(shard) for s in skipped)
    reasons = {s["key"]: s["reason"] for s in skipped}
    assert "truncated" in reasons[keys[0]] and "label 99 out of range" in reasons[keys[1]]


def test_evaluation_stops_naming_the_sample(bad_shards):
    out, shard, keys = bad_shards
    loader = eval_batches(load_manifest(out), "train", 64, build_transform(32, train=False))
    with pytest.raises(BadSample, match=f"bad sample '{keys[0]}' in shard {shard}"):
        list(loader)


def test_verification_at_start_names_the_changed_shard(bad_shards):
    out, shard, _ = bad_shards
    with pytest.raises(ValueError, match=f"{shard.name}: sha256 does not match"):
        verify_shards(load_manifest(out))


def test_a_run_lists_the_skipped_samples_in_metrics_json(bad_shards, tmp_path):
    from adpm_dist.runtime.engine import train

    out, shard, keys = bad_shards
    cfg = load_config(TINY, [f"data.shards={out}", f"run.output_dir={tmp_path / 'run'}", "method=ce",
                             "train.epochs=2"])
    metrics = train(cfg)
    listed = {s["key"]: s for s in metrics["skipped_samples"]}
    assert set(listed) == set(keys) and all(s["times"] == 2 and s["shard"] == str(shard) for s in listed.values())
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["skipped_samples"] == metrics["skipped_samples"]
    with pytest.raises(ValueError, match="sha256 does not match"):
        train(load_config(TINY, [f"data.shards={out}", f"run.output_dir={tmp_path / 'v'}", "method=ce",
                                 "data.verify=true"]))
