"""benchmarks/scaling_model.py's closed forms, benchmarks/speed.py's memory arithmetic and --quick
smoke run, and model.prior_mean=train_batch (one prior pass per joint step)."""
from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from adpm_dist.config import load_config
from adpm_dist.models import build_adpm

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs/digits_lt_tiny.yaml"
COUNTS = [60, 30, 15, 8, 4]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / f"benchmarks/{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module    # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


sm = load("scaling_model")
speed = load("speed")


# --- scaling model: closed forms -----------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 4, 8, 16])
def test_ring_allreduce_is_2_n_minus_1_over_n_bytes_over_bandwidth_plus_hop_latencies(n):
    s, b, a = 638e6, 100e9, 5e-6
    expected = 0.0 if n == 1 else 2 * (n - 1) / n * s / b + 2 * (n - 1) * a
    assert sm.ring_allreduce_time(s, n, bandwidth=b, latency=a) == pytest.approx(expected)
    assert sm.ring_half_time(s, n, bandwidth=b, latency=a) == pytest.approx(expected / 2)


def test_two_node_allreduce_adds_the_node_level_ring_over_the_shared_nic():
    s, inner, outer = 400e6, sm.Link("nv", 300e9, 0.0), sm.Link("eth", 10e9, 0.0)
    got = sm.hierarchical_allreduce_time(s, 2, 8, inner=inner, outer=outer)
    # 2 (g-1)/g S / B_in inside the node, 2 (N-1)/N S / B_nic across: the NIC carries all g shards
    assert got == pytest.approx(2 * 7 / 8 * s / 300e9 + s / 10e9)
    assert sm.allreduce_time(s, 16, outer, nodes=2) == pytest.approx(
        sm.hierarchical_allreduce_time(s, 2, 8, inner=sm.LINKS[0], outer=outer))


def test_ddp_step_hides_communication_behind_the_backward_but_the_last_bucket():
    kw = dict(t_fwd=1.0, t_bwd=2.0, t_bucket=0.1, t_opt=0.5)
    assert sm.ddp_step_time(t_comm=0.0, **kw) == pytest.approx(3.5)               # one GPU
    assert sm.ddp_step_time(t_comm=1.5, **kw) == pytest.approx(3.5 + 0.1)         # hidden but the tail
    assert sm.ddp_step_time(t_comm=5.0, **kw) == pytest.approx(3.5 + 3.0 + 0.1)   # outlasts the backward
    # k micro-steps communicate once (no_sync)
    assert sm.ddp_step_time(t_comm=5.0, accumulation=4, **kw) == pytest.approx(4 * 3.0 + 3.0 + 0.1 + 0.5)


def test_zero2_reduce_scatters_every_micro_step_and_shards_the_optimizer():
    got = sm.zero2_step_time(t_fwd=1.0, t_bwd=2.0, t_rs=3.0, t_ag=0.7, t_bucket=0.2, t_opt=0.8, gpus=4,
                             accumulation=2)
    assert got == pytest.approx(2 * (3.0 + (3.0 - 2.0) + 0.1) + 0.8 / 4 + 0.7)


def test_efficiency_is_single_over_parallel_and_one_gpu_is_perfect():
    assert sm.efficiency(2.0, 2.5) == pytest.approx(0.8)
    w = sm.Workload(flops_per_image=50e9, grad_bytes=640e6, param_bytes=640e6, params=160_000_000)
    one = sm.modelled_steps(w, batch=16, accumulation=1, gpus=1, link=sm.LINKS[0], peak=1e15, mfu=0.1)
    assert one["ddp_eff"] == 1.0 and one["comm"] == 0.0
    # more images per GPU or per all-reduce only helps DDP; a slower link only hurts
    effs = [sm.modelled_steps(w, batch=b, accumulation=k, gpus=8, link=link, peak=1e15, mfu=0.1)["ddp_eff"]
            for b, k, link in [(8, 1, sm.LINKS[0]), (32, 1, sm.LINKS[0]), (32, 4, sm.LINKS[0]), (32, 4, sm.LINKS[1])]]
    assert effs[0] < effs[1] < effs[2] and effs[3] < effs[2]


def test_compute_split_is_one_third_forward():
    f, b = sm.compute_times(30e9, 10, peak=1e12, mfu=0.5)
    assert f + b == pytest.approx(30e9 * 10 / 0.5e12) and b == pytest.approx(2 * f)


def test_alpha_beta_fit_recovers_bandwidth_and_latency():
    bandwidth, latency = 2e9, 40e-6
    sizes = [2**16, 2**20, 2**24]
    seconds = [sm.ring_allreduce_time(s, 2, bandwidth=bandwidth, latency=latency) for s in sizes]
    fit_b, fit_a = sm.fit_alpha_beta(sizes, seconds)
    assert fit_b == pytest.approx(bandwidth, rel=1e-6) and fit_a == pytest.approx(latency, rel=1e-6)


# --- speed.py: memory arithmetic ------------------------------------------------------------------

def test_linear_memory_and_largest_batch():
    fixed, per = speed.linear_memory((2, {"peak": 3e9 + 2 * 5e8}), (8, {"peak": 3e9 + 8 * 5e8}))
    assert fixed == pytest.approx(3e9) and per == pytest.approx(5e8)
    assert speed.largest_batch(24e9, fixed, per) == math.floor(21e9 / 5e8)
    assert speed.largest_batch(2e9, fixed, per) == 0


def test_quick_tiny_smoke_ends_with_one_ratio_line():
    out = subprocess.run([sys.executable, "-m", "benchmarks.speed", "--quick", "--tiny"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"train_step_ratio=\d+\.\d\d predict_ratio=\d+\.\d\d", last), last


# --- model.prior_mean=train_batch -----------------------------------------------------------------

def tiny(*overrides):
    torch.manual_seed(0)
    return build_adpm(load_config(TINY, list(overrides)), COUNTS)


def batch(n: int = 6, k: int = len(COUNTS)):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % k,
            torch.randint(0, 1000, (n,), generator=g), torch.randn(n, k, generator=g))


@pytest.mark.parametrize("encoder", ["test_resnet", "prior"])
def test_train_batch_mean_runs_the_prior_once_and_keeps_the_prior_ce(encoder):
    eval_model, one_pass = tiny(f"model.encoder={encoder}"), tiny(f"model.encoder={encoder}",
                                                                   "model.prior_mean=train_batch")
    images, labels, t, eps = batch()
    calls = []
    forward = one_pass.prior.forward
    one_pass.prior.forward = lambda x: calls.append(one_pass.prior.training) or forward(x)
    seen = {}
    add_noise = one_pass.scheduler.add_noise

    def spy(y0, mu, *rest):
        seen.setdefault("mu", mu)    # the first chain: mu_f
        return add_noise(y0, mu, *rest)
    one_pass.scheduler.add_noise = spy
    a, b = eval_model(images, labels, t, eps), one_pass(images, labels, t, eps)
    assert calls == [True]                                     # one train-mode prior pass, no eval pass
    # the CE (and BatchNorm's running statistics) are those of the paper's step: same train-mode pass
    assert torch.allclose(a["prior_ce"], b["prior_ce"])
    for (name, x), y in zip(eval_model.prior.state_dict().items(), one_pass.prior.state_dict().values()):
        assert torch.allclose(x.float(), y.float()), name
    # mu_f is the softmax of that pass's fused logits, detached
    torch.manual_seed(0)
    fresh = tiny(f"model.encoder={encoder}").train()
    assert torch.allclose(seen["mu"], F.softmax(fresh.prior(images).fused, dim=1), atol=1e-6)
    assert not seen["mu"].requires_grad
    b["diffusion"].backward()
    assert all(p.grad is None for p in one_pass.prior.parameters())   # the diffusion loss never trains the prior
    assert all(p.grad is not None for p in one_pass.denoiser.parameters())


def test_train_batch_mean_keeps_eval_for_a_frozen_prior():
    model = tiny("model.prior_mean=train_batch")
    model.freeze_prior = True   # as train.freeze_prior=true builds it (that key needs a pretrained prior file)
    before = {k: v.clone() for k, v in model.prior.state_dict().items()}
    losses = model(*batch())
    assert set(losses) == {"diffusion", "loss"}
    assert all(torch.equal(v, model.prior.state_dict()[k]) for k, v in before.items())   # BN statistics untouched
