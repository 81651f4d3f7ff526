"""What a run reports while it trains: progress, TensorBoard scalars, summary.csv, throughput and memory.

Only rank 0 writes. Progress bars (tqdm, with ETA) appear only on an interactive terminal; in a log
file (stdout or stderr not a TTY) they are off and ``RunLog.step`` prints a plain line every train.log_every
optimizer steps instead, so logs stay readable.
"""
from __future__ import annotations

import csv
import resource
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..files import atomic_writer


def interactive() -> bool:
    """Both streams on a terminal: tqdm draws on stderr, and a redirected stdout means a log file."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def progress(iterable=None, *, acc, **kwargs) -> tqdm:
    """A tqdm bar on the local main process of an interactive terminal; a silent pass-through elsewhere."""
    return tqdm(iterable, disable=not (acc.is_local_main_process and interactive()), dynamic_ncols=True, **kwargs)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocator peak on a GPU, max resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class RunLog:
    """TensorBoard scalars in ``<out>/tensorboard`` and a per-epoch ``<out>/summary.csv`` (rank 0).

    ``purge_step``: a resumed run drops the events a killed run wrote after its checkpoint.
    """

    def __init__(self, acc, out: Path, *, log_every: int, images_per_step: int, purge_step: int | None = None):
        self.acc, self.out, self.log_every, self.images_per_step = acc, out, max(1, log_every), images_per_step
        self.writer = None
        if acc.is_main_process:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=purge_step)
        self._last_time, self._last_step = time.perf_counter(), None

    def scalars(self, step: int, values: dict, prefix: str = "") -> None:
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.writer.add_scalar(f"{prefix}{k}", v, step)

    def step(self, step: int, losses: dict, lrs: dict, where: str) -> None:
        """Every ``log_every`` optimizer steps: scalars (losses, LR, images/s) and, in log files, a line."""
        if self._last_step is None:
            self._last_step = step - 1
        if step % self.log_every:
            return
        now = time.perf_counter()  # includes validation and checkpoints that fell in the interval
        rate = (step - self._last_step) * self.images_per_step / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        self.scalars(step, losses, "train/")
        self.scalars(step, lrs, "lr/")
        self.scalars(step, {"images_per_s": rate}, "throughput/")
        if not interactive():
            stats = " | ".join(f"{k} {v:.4f}" for k, v in losses.items())
            self.acc.print(f"step {step} | {where} | {stats} | lr {next(iter(lrs.values()), 0.0):.2e} | {rate:.0f} img/s")

    def epoch(self, row: dict, history: list[dict]) -> None:
        """TensorBoard per-epoch scalars and summary.csv rewritten from the whole history (resume-proof)."""
        step = row["step"]
        self.scalars(step, {k: v for k, v in row.items() if k.startswith("val_")}, "val/")
        self.scalars(step, {k: v for k, v in row.items() if not k.startswith("val_") and k not in ("epoch", "step")},
                     "epoch/")
        if self.acc.is_main_process:
            keys = list(dict.fromkeys(k for r in history for k in r))
            with atomic_writer(self.out / "summary.csv", newline="") as f:  # a kill mid-write keeps the old one
                w = csv.DictWriter(f, fieldnames=keys)
                w.writeheader()
                w.writerows(history)
            self.writer.flush()
        self.acc.print(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
