"""Fast, in-process tests of the training loop's parts: EMA, optimizer restart, launch checks,
DeepSpeed config filling, checkpoint retention/resume resolution, RNG and data-position replay, logging."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch import nn

from adpm_dist.runtime.checkpoint import (STATE_FILE, complete_checkpoints, enter_epoch, prune, resolve_resume, rng_restore,
                                  rng_snapshot)
from adpm_dist.config import ConfigError, load_config
from adpm_dist.runtime.distributed import _hookable, check_launch, configure_for
from adpm_dist.runtime.ema import EMA
from adpm_dist.runtime.optim import restart_group
from adpm_dist.runtime.tracking import RunLog

NO_DS = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=None))  # an Accelerator without DeepSpeed


def test_ema_matches_closed_form():
    """Constant weights p, shadow s0: after n updates shadow = p + decay^n (s0 - p) (DiffMIC's EMAHelper)."""
    net = nn.Linear(3, 2)
    s0 = {n: p.detach().clone() for n, p in net.named_parameters()}
    ema = EMA(NO_DS, net, decay=0.9)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    for _ in range(5):
        ema.update(net)
    for n, p in net.named_parameters():
        torch.testing.assert_close(ema.shadow[n], p.detach() + 0.9 ** 5 * (s0[n] - p.detach()))
    state = ema.weights(net.state_dict())
    assert set(state) == set(net.state_dict()) and torch.equal(state["weight"], ema.shadow["weight"])
    other = EMA(NO_DS, nn.Linear(3, 2), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.shadow["bias"], ema.shadow["bias"])
    with pytest.raises(ValueError, match="ema_decay"):
        EMA(NO_DS, net, decay=0.0)


def test_restart_group_drops_only_that_groups_adam_state():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    opt = torch.optim.Adam([{"params": a.parameters(), "name": "denoiser"}, {"params": b.parameters(), "name": "prior"}])
    (a(torch.ones(1, 2)).sum() + b(torch.ones(1, 2)).sum()).backward()
    opt.step()
    wrapped = SimpleNamespace(optimizer=opt)  # like accelerate's AcceleratedOptimizer
    assert restart_group(wrapped, "denoiser") == 2
    assert all(p not in opt.state for p in a.parameters()) and all(p in opt.state for p in b.parameters())


def test_check_launch_turns_silent_single_process_runs_into_errors(monkeypatch):
    acc = SimpleNamespace(num_processes=1, distributed_type="DistributedType.NO")
    for k in ("WORLD_SIZE", "ACCELERATE_USE_CPU", "MASTER_PORT", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(k, raising=False)
    check_launch(acc)  # a plain single process is fine
    monkeypatch.setenv("WORLD_SIZE", "2")  # `--multi_gpu` with a plain Accelerator() on CPU
    with pytest.raises(RuntimeError, match="WORLD_SIZE=2"):
        check_launch(acc)
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")  # `--cpu --num_processes 2`: no mpirun, one process
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(RuntimeError, match="started only this one"):
        check_launch(acc)


def test_configure_for_fills_deepspeed_auto_values_and_rejects_conflicts():
    cfg = load_config(None, ["train.grad_accum=4", "train.batch_size=16", "train.grad_clip=0"])

    def accelerator(ds: dict):
        return SimpleNamespace(gradient_accumulation_steps=1,
                               state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=ds)))

    acc = accelerator({"gradient_accumulation_steps": "auto", "train_micro_batch_size_per_gpu": "auto",
                       "gradient_clipping": "auto"})
    configure_for(acc, cfg.train)
    assert acc.gradient_accumulation_steps == 4
    assert acc.state.deepspeed_plugin.deepspeed_config == {
        "gradient_accumulation_steps": 4, "train_micro_batch_size_per_gpu": 16, "gradient_clipping": 0.0}
    with pytest.raises(ValueError, match="train_micro_batch_size_per_gpu=8 but train.batch_size=16"):
        configure_for(accelerator({"train_micro_batch_size_per_gpu": 8}), cfg.train)


def test_new_train_keys_are_validated():
    with pytest.raises(ConfigError, match="train.grad_accum"):
        load_config(None, ["train.grad_accum=0"])
    with pytest.raises(ConfigError, match="train.eval_ema"):
        load_config(None, ["train.ema_decay=0", "train.eval_ema=true"])
    with pytest.raises(ConfigError, match="train.ema_decay"):
        load_config(None, ["train.ema_decay=1"])


def _fake_checkpoint(root, step, f1=None):
    d = root / f"step_{step:08d}"
    d.mkdir(parents=True)
    (d / STATE_FILE).write_text(json.dumps({"step": step, "val_macro_f1": f1}))
    return d


def test_prune_keeps_the_last_k_and_the_best(tmp_path):
    for step, f1 in [(5, 0.3), (10, 0.9), (15, None), (20, 0.5), (25, None)]:
        _fake_checkpoint(tmp_path, step, f1)
    (tmp_path / ".tmp-step_00000030").mkdir()  # a save killed half-way: never a candidate
    prune(tmp_path, keep=2)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_00000010", "step_00000020", "step_00000025"]


def test_resolve_resume(tmp_path):
    assert resolve_resume("", tmp_path) is None and resolve_resume("auto", tmp_path) is None
    _fake_checkpoint(tmp_path, 3)
    latest = _fake_checkpoint(tmp_path, 12)
    (tmp_path / "step_00000015").mkdir()  # no state file: incomplete
    assert resolve_resume("auto", tmp_path) == latest
    assert resolve_resume(str(latest), tmp_path) == latest
    with pytest.raises(FileNotFoundError, match="step_00000015"):
        resolve_resume(str(tmp_path / "step_00000015"), tmp_path)


def test_rng_snapshot_round_trips_through_a_weights_only_load(tmp_path):
    snap = rng_snapshot()
    draws = (random.random(), np.random.rand(), torch.rand(1).item())
    torch.save(snap, tmp_path / "rng.pt")
    rng_restore(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == draws


class _AugmentingLoader:
    """Batches whose content depends on the global torch RNG (like random augmentation) and on the epoch."""

    def __init__(self, n: int):
        self.n = n

    def __iter__(self):
        for i in range(self.n):
            yield {"i": i, "aug": torch.rand(1).item()}


def test_enter_epoch_replays_the_data_position_and_rng():
    loader = _AugmentingLoader(6)
    it, first, epoch_rng, sums = enter_epoch(loader, None)
    assert first == 0 and sums == {}
    seen = [next(it) for _ in range(2)]
    saved = {"batch": 2, "epoch_rng": epoch_rng, "rng": rng_snapshot(), "sums": {"loss": 1.5}}
    rest = [b["aug"] for b in it]
    after = torch.rand(1).item()
    torch.manual_seed(12345)  # a new process: anything
    it, first, _, sums = enter_epoch(loader, saved)
    assert first == 2 and sums == {"loss": 1.5} and seen[0]["aug"] != rest[0]
    assert [b["aug"] for b in it] == rest and torch.rand(1).item() == after


def test_bf16_autocast_training_step_on_cpu():
    from adpm_dist.methods import build_model

    cfg = load_config("configs/digits_lt_tiny.yaml")
    model = build_model(cfg, [10] * 10)
    g = torch.Generator().manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(torch.randn(2, 3, 32, 32, generator=g), torch.arange(2), torch.randint(0, 1000, (2,)),
                       torch.randn(2, 10, generator=g), joint=True)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"]) and all(torch.isfinite(p.grad).all() for p in model.parameters()
                                                  if p.grad is not None)


def test_zero3_output_check_knows_what_deepspeed_can_hook():
    @dataclass
    class Features:
        x: torch.Tensor

    class Pair(NamedTuple):
        x: torch.Tensor
        y: torch.Tensor | None

    t = torch.zeros(1)
    assert _hookable(t) and _hookable((t, None)) and _hookable({"loss": t}) and _hookable(Pair(t, None))
    assert not _hookable(Features(t)) and not _hookable(None)


def test_summary_csv_and_tensorboard(tmp_path):
    acc = SimpleNamespace(is_main_process=True, print=lambda *a: None)
    log = RunLog(acc, tmp_path, log_every=1, images_per_step=32)
    history = [{"epoch": 1, "phase": "prior warm-up", "loss": 2.0, "step": 5},
               {"epoch": 2, "phase": "joint", "loss": 3.0, "diffusion": 1.0, "step": 10, "val_macro_f1": 0.4}]
    for step in (1, 2):
        log.step(step, {"loss": 1.0}, {"denoiser": 1e-3}, "epoch 1")
    log.epoch(history[-1], history)
    log.close()
    lines = (tmp_path / "summary.csv").read_text().splitlines()
    assert lines[0] == "epoch,phase,loss,step,diffusion,val_macro_f1" and len(lines) == 3
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
