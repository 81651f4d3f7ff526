"""What a run reports while it trains: progress, TensorBoard scalars, summary.csv, throughput and memory.

Only rank 0 writes. Progress bars (tqdm, with ETA) appear only on an interactive terminal; in a log
file (stdout or stderr not a TTY) they are off and ``RunLog.step`` prints a plain line every train.log_every
optimizer steps instead, so logs stay readable. Every epoch's line starts "epoch N/total | elapsed ... |
ETA ...", on a terminal and in a log file alike.

TensorBoard and summary.csv are always written; ``train.log_with`` adds Accelerate's trackers (W&B,
MLflow, ...: ``Accelerator(log_with=...)``, started here with the run's config and fed the same
scalars; ``tensorboard`` among them is the run's own ``tensorboard/``, not a second tree). Rank 0's
stdout and stderr, from the first epoch on, are also appended to ``<out>/train.log`` (a Ray trial's
launcher already sends them there). TensorBoard tags: ``train/<loss>``, ``lr/<group>``, ``throughput/images_per_s``,
``epoch/<key>`` and ``val/<key>`` (``val/macro_f1``; runs before 2026-12-05 wrote ``val/val_macro_f1``).
"""
from __future__ import annotations

import csv
import math
import resource
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..files import atomic_writer

PRINT_EVERY_S = 30.0  # the longest a log file waits for a step line (train.log_every steps, or sooner)


def interactive() -> bool:
    """Both streams on a terminal: tqdm draws on stderr, and a redirected stdout means a log file."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def progress(iterable=None, *, acc, **kwargs) -> tqdm:
    """A tqdm bar on the local main process of an interactive terminal; a silent pass-through elsewhere."""
    return tqdm(iterable, disable=not (acc.is_local_main_process and interactive()), dynamic_ncols=True, **kwargs)


def check_trackers(names: list[str]) -> str | None:
    """What is wrong with train.log_with (accelerate's tracker names), or None."""
    from accelerate.utils import LoggerType

    known = [t.value for t in LoggerType if t.value != "all"]
    bad = [n for n in names if n not in known]
    if bad:
        return f"unknown tracker(s) {bad}; Accelerate knows {', '.join(known)}"
    return missing_tracker_package(names)


# The package each tracker needs, and how to install it (pyproject's `tracking` extra has wandb and mlflow).
TRACKER_PACKAGES = {"wandb": ("wandb", "pip install 'adpm-dist[tracking]'"),
                    "mlflow": ("mlflow", "pip install 'adpm-dist[tracking]'"),
                    "comet_ml": ("comet_ml", "pip install comet_ml"), "aim": ("aim", "pip install aim"),
                    "clearml": ("clearml", "pip install clearml"), "dvclive": ("dvclive", "pip install dvclive"),
                    "swanlab": ("swanlab", "pip install swanlab"), "trackio": ("trackio", "pip install trackio")}


def missing_tracker_package(names: list[str]) -> str | None:
    """A tracker whose package is not installed: refused at start (Accelerate would skip it silently and the
    run would end with no tracking at all)."""
    import importlib.util

    for name in names:
        package, install = TRACKER_PACKAGES.get(name, (None, ""))
        if package and importlib.util.find_spec(package) is None:
            return f"{name} needs the {package} package, which is not installed here ({install})"
    return None


def duration(seconds: float) -> str:
    """1h02m, 3m05s, 42s: elapsed time and ETA in log lines."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s % 60:02d}s" if m else f"{s}s")


def eta_seconds(elapsed: float, done: int, remaining: int) -> float:
    """Remaining epochs at this session's mean epoch time (validation and checkpoints included)."""
    return elapsed / done * remaining if done > 0 else math.nan


def lr_text(lrs: dict) -> str:
    """The LR of every parameter group (ADPM: `lr denoiser 0.00e+00 prior 1.00e-03` during the prior
    warm-up), so a group at 0 is never shown alone as the run's LR."""
    if len(lrs) == 1:
        return f"lr {next(iter(lrs.values())):.2e}"
    return "lr " + " ".join(f"{name} {v:.2e}" for name, v in lrs.items())


def tag_values(row: dict) -> dict[str, dict]:
    """An epoch row's scalars by TensorBoard prefix: ``val/macro_f1`` (not ``val/val_macro_f1``), ``epoch/loss``."""
    val = {k.removeprefix("val_"): v for k, v in row.items() if k.startswith("val_")}
    rest = {k: v for k, v in row.items() if not k.startswith("val_") and k not in ("epoch", "step")}
    return {"val/": val, "epoch/": rest}


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocator peak on a GPU, max resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


LOG_NAME = "train.log"


class _Tee:
    """A stream that also appends what it is given to a log file; tqdm's bar frames ("\r") stay
    on the terminal. Everything else (isatty, fileno, encoding) is the original stream's."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        if "\r" not in text and not self.log.closed:
            self.log.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()
        if not self.log.closed:
            self.log.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def tee_to(path: Path):
    """Copy this process's stdout and stderr into `path` (appended: a resumed run continues it);
    None when stdout already goes there (a Ray trial's logs_to). Returns the opened log file."""
    current = getattr(sys.stdout, "name", None)  # open(Path) keeps the Path object as the name
    if isinstance(current, (str, Path)) and Path(current).resolve() == path.resolve():
        return None
    log = open(path, "a", buffering=1, encoding="utf-8")
    sys.stdout, sys.stderr = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
    return log


def untee(log) -> None:
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, _Tee) and stream.log is log:
            setattr(sys, name, stream.stream)
    log.close()


class RunLog:
    """TensorBoard scalars in ``<out>/tensorboard`` and a per-epoch ``<out>/summary.csv`` (rank 0).

    ``purge_step``: a resumed run drops the events a killed run wrote after its checkpoint.
    """

    def __init__(self, acc, out: Path, *, log_every: int, images_per_step: int, purge_step: int | None = None,
                 total_epochs: int | None = None, first_epoch: int = 0, tracker_config: dict | None = None):
        self.acc, self.out, self.log_every, self.images_per_step = acc, out, max(1, log_every), images_per_step
        self.writer, self.log_file = None, None
        if acc.is_main_process:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=purge_step)
            self.log_file = tee_to(Path(out) / LOG_NAME)
            print(f"== {time.strftime('%Y-%m-%d %H:%M:%S')}: {'resumed at step ' + str(purge_step) if purge_step else 'started'}"
                  f" ({Path(out) / 'config.yaml'}); this process's output follows", file=self.log_file or sys.stdout,
                  flush=True)
        if own_tensorboard(acc):
            self.acc.print(f"train.log_with=tensorboard: the scalars go to {Path(out) / 'tensorboard'} (always "
                           "written), not to a second event tree")
        self.trackers = bool(getattr(acc, "log_with", None))
        if self.trackers:  # train.log_with: Accelerate starts them on the main process
            acc.init_trackers(Path(out).name or "adpm-dist", config=_flat(tracker_config or {}))
        self._last_time, self._last_step, self._last_print = time.perf_counter(), None, None
        self.printing = not interactive()  # step lines in a log file; a terminal has the tqdm bar
        self.total_epochs, self.first_epoch, self._start = total_epochs, first_epoch, time.perf_counter()

    def scalars(self, step: int, values: dict, prefix: str = "") -> None:
        numbers = {f"{prefix}{k}": v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.writer is not None:
            for k, v in numbers.items():
                self.writer.add_scalar(k, v, step)
        if self.trackers and numbers:
            self.acc.log(numbers, step=step)

    def step(self, step: int, losses: dict, lrs: dict, where: str) -> None:
        """Every ``log_every`` optimizer steps: scalars (losses, LR, images/s); in log files a line then,
        and also at the session's first step and whenever PRINT_EVERY_S passed without one."""
        if self._last_step is None:
            self._last_step = step - 1
        logged = step % self.log_every == 0
        say = self.printing and (logged or self._last_print is None or self._print_due())
        if not (logged or say):
            return
        now = time.perf_counter()  # includes validation and checkpoints that fell in the interval
        rate = (step - self._last_step) * self.images_per_step / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        if logged:
            self.scalars(step, losses, "train/")
            self.scalars(step, lrs, "lr/")
            self.scalars(step, {"images_per_s": rate}, "throughput/")
        if say:
            self._last_print = now
            stats = " | ".join(f"{k} {v:.4f}" for k, v in losses.items())
            self.acc.print(f"step {step} | {where} | {stats} | {lr_text(lrs)} | {rate:.0f} img/s")

    def _print_due(self) -> bool:
        """A log file hears from the run at least every PRINT_EVERY_S seconds, however slow the steps."""
        return time.perf_counter() - (self._last_print or self._start) >= PRINT_EVERY_S

    def epoch(self, row: dict, history: list[dict]) -> None:
        """TensorBoard per-epoch scalars and summary.csv rewritten from the whole history (resume-proof)."""
        step = row["step"]
        for prefix, values in tag_values(row).items():
            self.scalars(step, values, prefix)
        if self.acc.is_main_process:
            keys = list(dict.fromkeys(k for r in history for k in r))
            with atomic_writer(self.out / "summary.csv", newline="") as f:  # a kill mid-write keeps the old one
                w = csv.DictWriter(f, fieldnames=keys)
                w.writeheader()
                w.writerows(history)
            self.writer.flush()
        self.acc.print(self.progress_line(row["epoch"]) + " | "
                       + " | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                    for k, v in row.items() if k != "epoch"))

    def progress_line(self, epoch: int) -> str:
        """"epoch N/total | elapsed ... | ETA ..." (``epoch`` 1-based; ETA from this session's epochs)."""
        elapsed = time.perf_counter() - self._start
        if self.total_epochs is None:
            return f"epoch {epoch} | elapsed {duration(elapsed)}"
        eta = eta_seconds(elapsed, epoch - self.first_epoch, self.total_epochs - epoch)
        return f"epoch {epoch}/{self.total_epochs} | elapsed {duration(elapsed)} | ETA {duration(eta)}"

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.log_file is not None:
            untee(self.log_file)
            self.log_file = None


def own_tensorboard(acc) -> bool:
    """Drop Accelerate's TensorBoard tracker (it would write a second tree, OUT/<name>/, that
    run.overwrite does not remove): RunLog's writer already puts the same scalars in OUT/tensorboard.
    True when there was one."""
    trackers = list(getattr(acc, "log_with", None) or [])
    kept = [t for t in trackers if str(getattr(t, "value", t)) != "tensorboard"]
    if len(kept) == len(trackers):
        return False
    acc.log_with = kept
    return True


def _flat(config: dict, prefix: str = "") -> dict:
    """A nested config as flat ``section.key`` values (what trackers show as hyper-parameters)."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
