"""Ctrl-C or SIGTERM on the driver of a search or study: the running trials end cleanly, nothing is lost.

On the first SIGINT or SIGTERM the driver
- sends SIGTERM to the trial processes of a local cluster (engine.train checkpoints and exits there);
- asks Ray Tune to end its loop (Tune's own stop signal, SIGUSR1): no new trial starts, a trial that
  ended is not retried, and Tune's state is written;
- then raises `Interrupted`, which the CLIs turn into one line, "continue with ... --resume", and exit
  130 (SIGINT) or 143 (SIGTERM), with no traceback and no `Tuner.restore` hint (--resume is the way:
  finished trials are kept, the others continue from their last checkpoint).
A second signal stops at once (KeyboardInterrupt, the same line and exit status).

On a cluster joined by --address the trials are Tune's to stop (its actors are ended with the loop).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import sys

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """The driver was asked to stop; `exit_code` is 128 + the signal (130 SIGINT, 143 SIGTERM)."""
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


# Process titles of the actors that run trials: a function trainable (single-process trials), and the
# Ray Train workers of a multi-worker trial. Never Ray's own processes (raylet, agents, GCS).
TRIAL_TITLES = ("ray::ImplicitFunc", "ray::RayTrainWorker")


def trial_processes() -> list:
    """The Ray worker processes under this driver that run trials (a local cluster's)."""
    import psutil

    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            title = " ".join(p.cmdline()[:1])
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if title.startswith(TRIAL_TITLES):
            found.append(p)
    return found


def stop_trials() -> int:
    """SIGTERM to every trial process of a local cluster; how many were asked."""
    asked = 0
    for p in trial_processes():
        with contextlib.suppress(Exception):
            p.send_signal(signal.SIGTERM)
            asked += 1
    return asked


class _TuneNoise(logging.Filter):
    """Ray Tune's lines about its own stop: its Tuner.restore hint is the wrong way here (--resume is)."""
    NOISE = ("Tuner.restore", "Stop signal received", "Trials did not complete", "Experiment has been interrupted")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in record.getMessage() for n in self.NOISE)


@contextlib.contextmanager
def graceful_stop(on_stop=None):
    """Inside: SIGINT/SIGTERM stop the trials and Tune's loop (module docstring); `on_stop(signum)` is called
    first (the progress table stops reporting failures). After the block, `Interrupted` if a signal came."""
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Tune's SIGINT handler would print its restore hint
    received: list[int] = []
    previous = {s: signal.getsignal(s) for s in SIGNALS}

    def handler(signum, frame):
        if received:  # a second signal: at once
            raise KeyboardInterrupt
        received.append(signum)
        if on_stop is not None:
            on_stop(signum)
        print(f"\n{signal.Signals(signum).name}: stopping the running trials (each keeps its last checkpoint); "
              f"send it again to stop at once", file=sys.stderr, flush=True)
        stop_trials()
        if hasattr(signal, "SIGUSR1") and signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None):
            signal.raise_signal(signal.SIGUSR1)  # Tune's loop ends at its next step

    noise = _TuneNoise()
    tune_log = logging.getLogger("ray.tune.tune")
    tune_log.addFilter(noise)
    try:
        for s in SIGNALS:
            signal.signal(s, handler)
        yield received
    except KeyboardInterrupt:
        raise Interrupted(received[0] if received else signal.SIGINT) from None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        tune_log.removeFilter(noise)
    if received:
        raise Interrupted(received[0])


def resume_command(prog: str, argv: list[str]) -> str:
    """The command that continues: the same one with --resume."""
    words = list(argv) + ([] if "--resume" in argv else ["--resume"])
    return f"python {prog} {shlex.join(words)}"


def report(e: Interrupted, prog: str, argv: list[str]) -> int:
    print(f"interrupted ({signal.Signals(e.signum).name}); finished trials are kept and the others continue from "
          f"their last checkpoint: continue with {resume_command(prog, argv)}", file=sys.stderr, flush=True)
    return e.exit_code
