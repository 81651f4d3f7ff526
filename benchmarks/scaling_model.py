"""How ADPM's joint training step scales with data parallelism, on paper (issue 17).

    python -m benchmarks.scaling_model [--config configs/pad_ufes.yaml] [--mfu 0.35] [--no-calibrate] [key=value ...]

1. Counts: FLOPs of one joint step (forward + backward) per image at the configured size, with
   torch.utils.flop_counter.FlopCounterMode (matmuls and convolutions; the rest is memory-bound
   and is folded into the utilisation), and the gradient bytes a data-parallel step exchanges
   (every trainable parameter, fp32: DDP and ZeRO reduce gradients in the parameters' dtype).
2. Model: step time on an H100-class GPU at a stated utilisation (``--mfu`` of ``--peak-tflops``),
   ring all-reduce time (eq. 1) on NVLink, PCIe and 100 Gb/s Ethernet, two nodes hierarchically
   (eq. 2), and the data-parallel efficiency (eq. 3-5) of DDP and ZeRO-2 per per-GPU batch and
   gradient accumulation, for 1, 2, 4, 8 GPUs and 2 nodes of 8.
3. Calibration (``--no-calibrate`` skips it): on this machine, 1 process vs 2 gloo ranks with the
   same global batch at a small size (configs/digits_lt.yaml), measured, next to what the same
   model predicts from the measured single-process compute and a fitted gloo all-reduce.

Equations (n ranks, S bytes, link bandwidth B per direction, per-hop latency a):
  (1) ring all-reduce   t_ar(S, n) = 2 (n - 1) / n * S / B + 2 (n - 1) a         (reduce-scatter + all-gather;
      Patarasuk & Yuan 2009). Reduce-scatter and all-gather alone are half of it each.
  (2) two-level         t = 2 (g - 1) / g * S / B_in + 2 (N - 1) / N * S / B_nic + latencies: reduce-scatter
      and all-gather inside each node of g GPUs, all-reduce of the node's shards across N nodes through
      the one NIC they share (g shards of S / g each cross it).
  (3) DDP step          t = k (t_f + t_b) + max(0, t_ar - t_b) + t_bucket + t_opt: gradient buckets are
      all-reduced while the backward runs; only what outlasts the last micro-step's backward, and the
      last bucket, are exposed. k micro-steps of gradient accumulation communicate once (no_sync).
  (4) ZeRO-2 step       t = k (t_f + t_b) + k [max(0, t_rs - t_b) + t_bucket/2] + t_opt / n + t_ag: gradients
      are reduce-scattered during every micro-step's backward (stage 2 keeps only its shard, so it
      cannot skip a micro-step), the optimizer steps 1/n of the parameters, and the updated
      parameters are all-gathered after the step, not overlapped.
  (5) efficiency        E(n) = t(1) / t(n) at equal per-GPU batch and accumulation (weak scaling: n
      times the images in t(n)); t(1) has no communication.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import socket
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Link:
    """A collective's bus: bandwidth per direction per GPU (bytes/s) and per-hop latency (s)."""
    name: str
    bandwidth: float
    latency: float


# Stated assumptions (achievable collective bus bandwidth, not line rate):
LINKS = (
    Link("NVLink (H100 SXM)", 360e9, 5e-6),      # NVLink 4: 450 GB/s per direction; NCCL reaches ~80%
    Link("PCIe 4.0 x16", 20e9, 10e-6),          # 32 GB/s per direction; through the host bridge ~60%
    Link("100 Gb/s Ethernet", 11e9, 30e-6),    # 12.5 GB/s line rate; RoCE/TCP ~90%
)
GPUS = (1, 2, 4, 8)
NODE_GPUS = 8                 # GPUs per node in the two-node rows (NVLink inside, 100 Gb/s Ethernet between)
BUCKET_BYTES = 25 * 2**20     # DDP's default bucket_cap_mb = 25 (the exposed tail of eq. 3)
ADAM_BYTES_PER_PARAM = 32     # fp32 fused Adam: read p, g, m, v (16 B) and write p, m, v (12 B), + AMSGrad ~4 B
HBM_BYTES_PER_S = 3.35e12 * 0.6   # H100 SXM HBM3 at a 60% achieved fraction: the optimizer is memory-bound


# --- closed forms -------------------------------------------------------------------------------

def ring_allreduce_time(nbytes: float, n: int, *, bandwidth: float, latency: float) -> float:
    """Eq. 1: 2 (n-1)/n * S / B + 2 (n-1) a; zero for one rank."""
    if n <= 1:
        return 0.0
    return 2 * (n - 1) / n * nbytes / bandwidth + 2 * (n - 1) * latency


def ring_half_time(nbytes: float, n: int, *, bandwidth: float, latency: float) -> float:
    """A ring reduce-scatter or all-gather alone: (n-1)/n * S / B + (n-1) a (half of eq. 1)."""
    return 0.5 * ring_allreduce_time(nbytes, n, bandwidth=bandwidth, latency=latency)


def hierarchical_allreduce_time(nbytes: float, nodes: int, gpus_per_node: int, *, inner: Link,
                                outer: Link) -> float:
    """Eq. 2: intra-node reduce-scatter + all-gather (one full ring all-reduce's volume on ``inner``)
    and an all-reduce across ``nodes`` of all g shards through one shared NIC (S bytes in total)."""
    intra = ring_allreduce_time(nbytes, gpus_per_node, bandwidth=inner.bandwidth, latency=inner.latency)
    inter = ring_allreduce_time(nbytes, nodes, bandwidth=outer.bandwidth, latency=outer.latency)
    return intra + inter


def allreduce_time(nbytes: float, gpus: int, link: Link, *, nodes: int = 1) -> float:
    """Eq. 1 on one node, eq. 2 (NVLink inside, ``link`` between) across nodes."""
    if nodes <= 1:
        return ring_allreduce_time(nbytes, gpus, bandwidth=link.bandwidth, latency=link.latency)
    return hierarchical_allreduce_time(nbytes, nodes, gpus // nodes, inner=LINKS[0], outer=link)


def ddp_step_time(*, t_fwd: float, t_bwd: float, t_comm: float, t_bucket: float, t_opt: float,
                  accumulation: int = 1) -> float:
    """Eq. 3: k (t_f + t_b) + max(0, t_ar - t_b) + t_bucket + t_opt (t_comm = 0: one GPU)."""
    exposed = max(0.0, t_comm - t_bwd) + min(t_bucket, t_comm) if t_comm > 0 else 0.0
    return accumulation * (t_fwd + t_bwd) + exposed + t_opt


def zero2_step_time(*, t_fwd: float, t_bwd: float, t_rs: float, t_ag: float, t_bucket: float, t_opt: float,
                    gpus: int, accumulation: int = 1) -> float:
    """Eq. 4: every micro-step reduce-scatters during its backward; 1/n of the optimizer; exposed all-gather."""
    exposed_rs = max(0.0, t_rs - t_bwd) + min(t_bucket / 2, t_rs) if t_rs > 0 else 0.0
    return accumulation * (t_fwd + t_bwd + exposed_rs) + t_opt / gpus + t_ag


def efficiency(t_single: float, t_parallel: float) -> float:
    """Eq. 5: E = t(1) / t(n) at the same per-GPU work."""
    return t_single / t_parallel


def compute_times(flops_per_image: float, batch: int, *, peak: float, mfu: float) -> tuple[float, float]:
    """(forward, backward) seconds of ``batch`` images: backward is 2/3 of forward + backward FLOPs
    (two matmuls per forward one: input and weight gradients)."""
    total = flops_per_image * batch / (peak * mfu)
    return total / 3, 2 * total / 3


@dataclass(frozen=True)
class Workload:
    flops_per_image: float     # forward + backward
    grad_bytes: float          # gradient bytes exchanged per step (all trainable parameters)
    param_bytes: float         # parameters all-gathered by ZeRO-2 (same dtype)
    params: int


def modelled_steps(w: Workload, *, batch: int, accumulation: int, gpus: int, link: Link, nodes: int = 1,
                   peak: float, mfu: float) -> dict[str, float]:
    """Step seconds of DDP and ZeRO-2 and their efficiencies vs one GPU (eq. 3-5)."""
    t_f, t_b = compute_times(w.flops_per_image, batch, peak=peak, mfu=mfu)
    t_opt = w.params * ADAM_BYTES_PER_PARAM / HBM_BYTES_PER_S
    single = ddp_step_time(t_fwd=t_f, t_bwd=t_b, t_comm=0.0, t_bucket=0.0, t_opt=t_opt, accumulation=accumulation)
    t_ar = allreduce_time(w.grad_bytes, gpus, link, nodes=nodes)
    t_bucket = allreduce_time(min(BUCKET_BYTES, w.grad_bytes), gpus, link, nodes=nodes)
    ddp = ddp_step_time(t_fwd=t_f, t_bwd=t_b, t_comm=t_ar, t_bucket=t_bucket, t_opt=t_opt,
                        accumulation=accumulation)
    zero2 = zero2_step_time(t_fwd=t_f, t_bwd=t_b, t_rs=t_ar / 2, t_ag=allreduce_time(w.param_bytes, gpus, link,
                                                                                        nodes=nodes) / 2,
                            t_bucket=t_bucket, t_opt=t_opt, gpus=gpus, accumulation=accumulation)
    return {"single": single, "ddp": ddp, "zero2": zero2, "comm": t_ar,
            "ddp_eff": efficiency(single, ddp), "zero2_eff": efficiency(single, zero2)}


# --- counting -----------------------------------------------------------------------------------

def count_workload(cfg, class_count: int, *, batch: int = 1) -> Workload:
    """FLOPs per image of a joint step (forward + backward) and the trainable parameters' bytes."""
    from torch.utils.flop_counter import FlopCounterMode

    from adpm_dist.methods import build_model

    torch.manual_seed(0)
    model = build_model(cfg, [1] * class_count).train()
    size = cfg.data.image_size
    x = torch.randn(max(batch, 2), 3, size, size)   # BatchNorm in train mode needs two images
    y = torch.arange(len(x)) % class_count
    t = torch.randint(0, cfg.diffusion.timesteps, (len(x),))
    eps = torch.randn(len(x), class_count)
    with FlopCounterMode(display=False) as counter:
        model(x, y, t, eps, joint=True)["loss"].backward()
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Workload(counter.get_total_flops() / len(x), 4.0 * params, 4.0 * params, params)


# --- calibration: 1 process vs 2 gloo ranks on this machine --------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, cfg, class_count: int, global_batch: int, steps: int, queue):
    """One gloo rank: DDP joint steps on global_batch / world images, alternating synchronised steps
    with ``no_sync`` ones (same work, no gradient exchange, same CPU contention): their difference
    is the exposed communication. Reports (sync times, no_sync times, no_sync backward times) and
    an all-reduce fit."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from adpm_dist.methods import build_model
    from adpm_dist.runtime.optim import build_optimizer

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = build_model(cfg, [1] * class_count).train()
    ddp = DistributedDataParallel(model)
    optimizer = build_optimizer(model, cfg.train)
    b = global_batch // world
    g = torch.Generator().manual_seed(rank)
    size = cfg.data.image_size
    x, y = torch.randn(b, 3, size, size, generator=g), torch.arange(b) % class_count
    t, eps = torch.randint(0, cfg.diffusion.timesteps, (b,), generator=g), torch.randn(b, class_count, generator=g)
    times = {"sync": [], "local": [], "local_backward": []}
    for i in range(2 * steps + 2):      # two warm-up steps (Adam's state, gloo's buffers)
        sync = i % 2 == 0
        dist.barrier()
        start = time.perf_counter()
        with contextlib.nullcontext() if sync else ddp.no_sync():
            loss = ddp(x, y, t, eps, joint=True)["loss"]
            mid = time.perf_counter()
            loss.backward()
        end = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= 2:
            times["sync" if sync else "local"].append(time.perf_counter() - start)
            if not sync:
                times["local_backward"].append(end - mid)
    fit = None
    if world > 1:  # alpha-beta fit of gloo's all-reduce between these two ranks
        sizes, seconds = [2**16, 2**22, 2**24], []
        for n in sizes:
            buf = torch.zeros(n // 4)
            dist.all_reduce(buf)
            best = math.inf
            for _ in range(3):
                dist.barrier()
                s = time.perf_counter()
                dist.all_reduce(buf)
                best = min(best, time.perf_counter() - s)
            seconds.append(best)
        fit = (sizes, seconds)
    grad_bytes = 4.0 * sum(p.numel() for p in model.parameters())
    queue.put((rank, times, fit, grad_bytes))
    dist.destroy_process_group()


def run_ranks(world: int, cfg, class_count: int, global_batch: int, steps: int) -> list:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, cfg, class_count, global_batch, steps, queue))
             for r in range(world)]
    for p in procs:
        p.start()
    out = sorted(queue.get(timeout=600) for _ in procs)
    for p in procs:
        p.join()
    return out


def fit_alpha_beta(sizes: list[int], seconds: list[float]) -> tuple[float, float]:
    """Least-squares t = a + S / B over measured all-reduces of two ranks (eq. 1 with n = 2:
    t = S / B + 2 a): returns (bandwidth B, per-hop latency a)."""
    n = len(sizes)
    mx, my = sum(sizes) / n, sum(seconds) / n
    slope = sum((s - mx) * (t - my) for s, t in zip(sizes, seconds)) / sum((s - mx) ** 2 for s in sizes)
    intercept = my - slope * mx
    return 1.0 / max(slope, 1e-30), max(intercept, 0.0) / 2


def single_step_times(cfg, class_count: int, batch: int, steps: int) -> tuple[float, float]:
    """(median step seconds, median backward seconds) of plain joint steps in this process."""
    from adpm_dist.methods import build_model
    from adpm_dist.runtime.optim import build_optimizer

    torch.manual_seed(0)
    model = build_model(cfg, [1] * class_count).train()
    optimizer = build_optimizer(model, cfg.train)
    size = cfg.data.image_size
    x, y = torch.randn(batch, 3, size, size), torch.arange(batch) % class_count
    t, eps = torch.randint(0, cfg.diffusion.timesteps, (batch,)), torch.randn(batch, class_count)
    total, backward = [], []
    for i in range(steps + 2):
        start = time.perf_counter()
        loss = model(x, y, t, eps, joint=True)["loss"]
        mid = time.perf_counter()
        loss.backward()
        end = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= 2:
            total.append(time.perf_counter() - start)
            backward.append(end - mid)
    return statistics.median(total), statistics.median(backward)


def calibrate(config: str, overrides: list[str], *, global_batch: int, steps: int, class_count: int = 10) -> list[str]:
    """Measured 1 process vs 2 gloo ranks at one global batch, and eq. 3 from measured parts; report lines.

    The ranks share this machine's cores (and with other jobs), which a GPU model does not: so the
    model is checked on what it claims, the communication a synchronised step adds over a ``no_sync``
    step of the same ranks, and the 2-rank step rebuilt from that compute and eq. 1 / eq. 3.
    """
    from adpm_dist.config import load_config

    cfg = load_config(ROOT / config, overrides)
    torch.set_num_threads(1)
    one, _ = single_step_times(cfg, class_count, global_batch, steps)
    half, _ = single_step_times(cfg, class_count, global_batch // 2, steps)
    ranks = run_ranks(2, cfg, class_count, global_batch, steps)
    sync = max(statistics.median(r[1]["sync"]) for r in ranks)   # a DDP step ends with the slower rank
    local = max(statistics.median(r[1]["local"]) for r in ranks)
    local_bwd = max(statistics.median(r[1]["local_backward"]) for r in ranks)
    sizes, seconds = ranks[0][2]
    bandwidth, latency = fit_alpha_beta(sizes, seconds)
    grad_bytes = ranks[0][3]
    t_ar = ring_allreduce_time(grad_bytes, 2, bandwidth=bandwidth, latency=latency)
    t_bucket = ring_allreduce_time(min(BUCKET_BYTES, grad_bytes), 2, bandwidth=bandwidth, latency=latency)
    exposed = max(0.0, t_ar - local_bwd) + min(t_bucket, t_ar)          # eq. 3, k = 1
    return [
        f"Calibration on this machine ({os.cpu_count()} cores shared with other jobs, load "
        f"{os.getloadavg()[0]:.1f}; 1 torch thread per rank, gloo; {config} {' '.join(overrides)}, global batch "
        f"{global_batch}, median of {steps} steps):",
        f"  gradients {grad_bytes / 1e6:.1f} MB; gloo all-reduce fit (2 ranks, 64 KiB-16 MiB): "
        f"{bandwidth / 1e9:.2f} GB/s, {latency * 1e6:.0f} us per hop -> t_ar {t_ar * 1e3:.1f} ms (eq. 1)",
        f"  measured: 1 process x {global_batch}: {one * 1e3:.0f} ms; 1 process x {global_batch // 2}: "
        f"{half * 1e3:.0f} ms; 2 ranks x {global_batch // 2}: {sync * 1e3:.0f} ms (speed-up {one / sync:.2f}x, "
        f"efficiency {one / sync / 2:.0%}); the same ranks with no_sync: {local * 1e3:.0f} ms (backward "
        f"{local_bwd * 1e3:.0f} ms)",
        f"  communication a synchronised step adds: measured {(sync - local) * 1e3:.0f} ms, modelled "
        f"{exposed * 1e3:.0f} ms (eq. 3: max(0, t_ar - t_b) + last bucket); 2-rank step measured "
        f"{sync * 1e3:.0f} ms, modelled {(local + exposed) * 1e3:.0f} ms",
        f"  the rest of the gap to ideal ({half * 1e3:.0f} ms per rank alone -> {local * 1e3:.0f} ms side by side) "
        "is the two ranks sharing the CPU cores, which separate GPUs do not.",
    ]


# --- table ----------------------------------------------------------------------------------------

def table(w: Workload, *, batches: list[int], accumulations: list[int], peak: float, mfu: float) -> list[str]:
    """Efficiency rows (per-GPU batch x accumulation): DDP / ZeRO-2 on 2, 4, 8 GPUs over NVLink and
    PCIe, and on 2 nodes x 8 (NVLink inside, 100 Gb/s Ethernet between)."""
    cols = [(link, n, 1) for link in LINKS[:2] for n in GPUS[1:]] + [(LINKS[2], 2 * NODE_GPUS, 2)]
    names = [f"{link.name.split(' (')[0]} x{n}" if nodes == 1 else f"2 nodes x {NODE_GPUS}, Ethernet"
             for link, n, nodes in cols]
    lines = ["| per-GPU batch | accum. | 1-GPU step, ms | " + " | ".join(names) + " |",
             "|" + "---|" * (3 + len(cols))]
    for b in batches:
        for k in accumulations:
            cells = []
            for link, n, nodes in cols:
                r = modelled_steps(w, batch=b, accumulation=k, gpus=n, nodes=nodes, link=link, peak=peak, mfu=mfu)
                cells.append(f"{r['ddp_eff']:.0%} / {r['zero2_eff']:.0%}")
            single = modelled_steps(w, batch=b, accumulation=k, gpus=1, link=LINKS[0], peak=peak, mfu=mfu)["single"]
            lines.append(f"| {b} | {k} | {single * 1e3:.1f} | " + " | ".join(cells) + " |")
    comm = [f"{link.name}: {allreduce_time(w.grad_bytes, n, link, nodes=nodes) * 1e3:.1f} ms"
            for link, n, nodes in (cols[2], cols[5], cols[6])]
    lines += ["", "Gradient all-reduce per step (eq. 1, 2), 8 GPUs / 2 nodes: " + "; ".join(comm)]
    return lines


def settings_at(w: Workload, target: float, *, batches: list[int], accumulations: list[int], peak: float,
                mfu: float) -> list[str]:
    """The smallest per-GPU batch x accumulation that keeps DDP (and ZeRO-2) >= target to 8 GPUs, per link."""
    out = []
    for link in LINKS[:2]:
        for method in ("ddp", "zero2"):
            ok = [(b * k, b, k) for b in batches for k in accumulations
                  if modelled_steps(w, batch=b, accumulation=k, gpus=8, link=link, peak=peak,
                                    mfu=mfu)[f"{method}_eff"] >= target]
            best = f"per-GPU batch {min(ok)[1]} x accumulation {min(ok)[2]}" if ok else "none in the grid"
            out.append(f"  8 GPUs, {link.name}, {'DDP' if method == 'ddp' else 'ZeRO-2'}: {best}")
    for method in ("ddp", "zero2"):
        ok = [(b * k, b, k) for b in batches for k in accumulations
              if modelled_steps(w, batch=b, accumulation=k, gpus=2 * NODE_GPUS, nodes=2, link=LINKS[2], peak=peak,
                                mfu=mfu)[f"{method}_eff"] >= target]
        best = f"per-GPU batch {min(ok)[1]} x accumulation {min(ok)[2]}" if ok else "none in the grid"
        out.append(f"  2 nodes x {NODE_GPUS}, 100 Gb/s Ethernet, {'DDP' if method == 'ddp' else 'ZeRO-2'}: {best}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/pad_ufes.yaml", help="the modelled size (paper: pad_ufes)")
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="H100 SXM dense bf16 (fp32 via TF32: 495)")
    parser.add_argument("--mfu", type=float, default=0.10,
                        help="achieved fraction of the peak: convnets at 224 px reach about 10%% (a ResNet-50 "
                        "training at ~3,500 images/s x 24.6 GFLOP = 86 TFLOP/s of 989)")
    parser.add_argument("--grad-bytes", type=float, default=4.0,
                        help="bytes per gradient element on the wire: 4 (fp32, DDP's default), 2 (bf16 comm hook)")
    parser.add_argument("--batches", default="8,16,32,64")
    parser.add_argument("--accumulations", default="1,4,16")
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--no-calibrate", action="store_true")
    parser.add_argument("--calibration-config", default="configs/digits_lt.yaml")
    parser.add_argument("--calibration-batch", type=int, default=32)
    parser.add_argument("--calibration-steps", type=int, default=8)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    from adpm_dist.config import load_config

    torch.set_num_threads(1)
    cfg = load_config(ROOT / args.config, args.overrides)
    started = time.perf_counter()
    w = count_workload(cfg, args.classes)
    if args.grad_bytes != 4.0:  # compressed gradients (DDP comm hook); ZeRO-2 all-gathers fp32 parameters still
        w = Workload(w.flops_per_image, args.grad_bytes * w.params, w.param_bytes, w.params)
    peak = args.peak_tflops * 1e12
    batches = [int(v) for v in args.batches.split(",")]
    accumulations = [int(v) for v in args.accumulations.split(",")]
    m = cfg.model
    print(f"Workload: {args.config} {' '.join(args.overrides)} (prior {m.backbone}, encoder {m.encoder}, hidden "
          f"{m.hidden_dim}, {cfg.data.image_size} px, prior_mean {m.prior_mean}): joint step "
          f"{w.flops_per_image / 1e9:.1f} GFLOP per image (forward + backward, FlopCounterMode); "
          f"{w.params / 1e6:.1f} M trainable parameters -> {w.grad_bytes / 1e6:.0f} MB of gradients per step.")
    print(f"GPU: {args.peak_tflops:.0f} TFLOP/s peak at {args.mfu:.0%} utilisation; Adam {ADAM_BYTES_PER_PARAM} B "
          f"per parameter at {HBM_BYTES_PER_S / 1e12:.1f} TB/s; DDP buckets {BUCKET_BYTES / 2**20:.0f} MiB. Links: "
          + "; ".join(f"{link.name} {link.bandwidth / 1e9:.0f} GB/s, {link.latency * 1e6:.0f} us" for link in LINKS)
          + ". Cells: efficiency E(n) = t(1) / t(n) (eq. 5), DDP / ZeRO-2.")
    print()
    print("\n".join(table(w, batches=batches, accumulations=accumulations, peak=peak, mfu=args.mfu)))
    print()
    print(f"Smallest per-GPU batch x accumulation with efficiency >= {args.target:.0%}:")
    print("\n".join(settings_at(w, args.target, batches=batches, accumulations=accumulations, peak=peak,
                                mfu=args.mfu)))
    if not args.no_calibrate:
        print()
        print("\n".join(calibrate(args.calibration_config, [], global_batch=args.calibration_batch,
                                  steps=args.calibration_steps)))
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
