"""Two real processes (gloo, Accelerate on CPU): every rank gets the same number of training batches
(a per-batch all_reduce stands in for DDP: unequal counts would hang until the timeout), ranks read
disjoint shards, Accelerate hands the loaders back untouched, and evaluation covers every sample
exactly once across ranks."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from adpm_dist.data import load_manifest, prepare_dataset

WORLD = 2
TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, shards: str, out: str) -> None:
    """One rank: train two epochs (0 and 2 workers), evaluate, write what it saw to out/rank{r}.json."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD), ACCELERATE_USE_CPU="1")
    from datetime import timedelta

    import torch
    import torch.distributed as dist
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, gather_object

    from adpm_dist.data import build_transform, eval_batches, load_manifest, train_batches
    from adpm_dist.data import stream

    torch.set_num_threads(1)
    # A spawned child inherits "spawn" as its default start method, so DataLoader workers would
    # re-import torch (tens of seconds on a busy machine); torchrun's ranks use the platform default.
    import multiprocessing

    multiprocessing.set_start_method("fork", force=True)
    acc = Accelerator(cpu=True, kwargs_handlers=[InitProcessGroupKwargs(backend="gloo", timeout=timedelta(seconds=60))])
    assert acc.num_processes == WORLD and acc.process_index == rank
    manifest = load_manifest(shards)
    tf = build_transform(16, train=True)
    opened: list[str] = []
    real_read = stream.read_shard
    stream.read_shard = lambda path: (opened.append(Path(path).name), real_read(path))[1]

    report: dict = {"train": []}
    for epoch, workers in ((0, 0), (1, 2)):
        opened.clear()
        loader = train_batches(manifest, "train", 16, tf, epoch=epoch, seed=3, rank=rank, world_size=WORLD,
                               num_workers=workers)
        assert acc.prepare(loader) is loader  # not a DataLoader: Accelerate cannot re-dispatch it
        keys, batches = [], 0
        for batch in loader:
            step = torch.ones(1)
            dist.all_reduce(step)  # DDP's gradient all-reduce, one per step, on every rank
            assert step.item() == WORLD
            keys += batch["key"]
            batches += 1
        report["train"].append({"len": len(loader), "batches": batches, "keys": keys, "opened": sorted(set(opened)),
                                "assigned": sorted(Path(p).name for p, _ in loader.assignment(epoch)[rank])})

    test = eval_batches(manifest, "test", 64, build_transform(16, train=False), rank=rank, world_size=WORLD,
                        num_workers=1)
    local = [k for batch in test for k in batch["key"]]
    gathered = gather_object(local)
    report["eval_local"] = local
    report["eval_gathered"] = gathered
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))
    acc.wait_for_everyone()
    acc.end_training()


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "shards"
    # 40 samples per shard: 11 unequal training shards (420 = 10 x 40 + 20), 35 test shards
    prepare_dataset("digits_lt", out, image_size=16, samples_per_shard=40, progress=False)
    return out


def test_two_ranks_equal_batches_and_exact_once_eval(shards, tmp_path):
    port = _free_port()
    ctx = mp.start_processes(_rank_main, args=(port, str(shards), str(tmp_path)), nprocs=WORLD, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                pytest.fail(f"ranks still running after {TIMEOUT_S} s: a rank ran out of batches (DDP would hang)")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join(10)

    manifest = load_manifest(shards)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    n_train = manifest.num_samples["train"]
    for epoch in range(2):
        runs = [rep["train"][epoch] for rep in reports]
        expected = n_train // (16 * WORLD)
        assert [r["len"] for r in runs] == [r["batches"] for r in runs] == [expected] * WORLD
        assert all(len(r["keys"]) == expected * 16 for r in runs)
        # each rank read only its own shards, and the ranks' shards are disjoint
        assert all(set(r["opened"]) <= set(r["assigned"]) for r in runs)
        assert not set(runs[0]["assigned"]) & set(runs[1]["assigned"])
        assert not set(runs[0]["keys"]) & set(runs[1]["keys"])
    assert reports[0]["train"][0]["assigned"] != reports[0]["train"][1]["assigned"]  # re-dealt per epoch

    test_keys = {r.key for r in manifest.rows("test")}
    gathered = reports[0]["eval_gathered"]
    assert len(gathered) == len(set(gathered)) == len(test_keys) == manifest.num_samples["test"]
    assert set(gathered) == test_keys
    assert not set(reports[0]["eval_local"]) & set(reports[1]["eval_local"])
