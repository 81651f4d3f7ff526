"""Graceful interruption of a training run: SIGTERM (a scheduler preempting the job) or SIGINT (Ctrl-C).

The first signal only raises a flag. At the next optimizer step boundary the ranks agree on it (a max
all-reduce of the flag, every step: a rank that got the signal and one that did not must stop at the
same step, or the first would wait forever in the checkpoint's collectives), every rank saves that
step's resumable checkpoint, and ``Interrupted`` unwinds the run; launch/train.py prints one line with
the command that resumes it and exits 128 + the signal (143 for SIGTERM, 130 for SIGINT). A second
signal stops at once (exit 128 + signal, no checkpoint of the current step). A second signal that comes
within ``SAME_EVENT_S`` of the first counts as the same interruption: torchrun's agent forwards a
terminal's Ctrl-C as SIGTERM to workers that got the SIGINT themselves a moment earlier.

Handlers are installed by the process's entry point (launch/train.py) on the main thread only; Ray Tune
trials keep Ray's own handling (engine.train without a ``StopRequest`` never checks).
"""
from __future__ import annotations

import os
import signal
import sys
import time

import torch

SIGNALS = (signal.SIGTERM, signal.SIGINT)
SAME_EVENT_S = 2.0


class Interrupted(Exception):
    """The run stopped on a signal after saving ``checkpoint`` (its step ``step``)."""

    def __init__(self, signum: int, step: int, checkpoint: str):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint {checkpoint}")
        self.signum, self.step, self.checkpoint = signum, step, checkpoint

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopRequest:
    """The flag the signal handlers raise and the training loop reads at each optimizer step."""

    def __init__(self):
        self.signum: int | None = None
        self.at = 0.0
        self.previous: dict = {}

    def install(self) -> "StopRequest":
        for sig in SIGNALS:
            self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum, self.at = signum, time.monotonic()
            print(f"received {name}: finishing the current step, then saving a checkpoint "
                  "(send it again to stop at once)", file=sys.stderr, flush=True)
            return
        if time.monotonic() - self.at < SAME_EVENT_S:
            return  # the launcher forwarding the same interruption
        print(f"received {name} again: stopping at once (no checkpoint of the current step)", file=sys.stderr,
              flush=True)
        os._exit(128 + signum)

    def agreed(self, acc) -> int | None:
        """The signal every rank stops for (the first one any rank got), or None: a collective, call on
        every rank at the same step. One int64 all-reduce per optimizer step; it adds no host-device sync
        the step does not already have (train_step reads every loss with .item())."""
        local = self.signum or 0
        if acc.num_processes == 1:
            return local or None
        flag = torch.tensor([local], device=acc.device, dtype=torch.int64)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item()) or None


def resume_command(argv: list[str], num_processes: int) -> str:
    """The launch that continues an interrupted run: the same script and overrides plus train.resume=auto
    (an earlier train.resume=... is replaced)."""
    args = [a for a in argv if not a.startswith("train.resume=")] + ["train.resume=auto"]
    launcher = "accelerate launch" + (f" --num_processes {num_processes}" if num_processes > 1 else "")
    return " ".join([launcher, *(quote(a) for a in args)])


def quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
