"""A live table of the search's trials, printed by the driver (Tune's own output is silenced).

One line per event (start, retry, finish, failure, early stop) and, at most every `interval`
seconds, a table: running trials, failed ones and the latest finished ones, with counts and the
best (alpha, beta) so far by mean evaluation macro-F1 over the folds finished yet.
"""
from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

from ray.tune import Callback


class TrialState:
    def __init__(self, info: dict):
        self.info = info
        self.status = "pending"
        self.attempts = 0
        self.epoch = None
        self.loss = None
        self.val_f1 = None
        self.eval_f1 = None


class ProgressTable(Callback):
    def __init__(self, trials: list[dict], total_epochs: int, interval: float = 15.0, stream=None,
                 max_finished_rows: int = 5, show_eval: bool = True, epochs: dict[str, int] | None = None):
        """`show_eval=False`: never print a trial's evaluation score (a benchmark that chooses on
        validation only, benchmarks/levers.py, must not show the evaluation part while it runs).
        `epochs`: each trial's own epoch count (a classifier has no prior warm-up: 30/30, not 30/40);
        `total_epochs` for the ETA and for trials it does not name."""
        self.show_eval = show_eval
        self.states = {t["id"]: TrialState(t) for t in trials}
        self.total_epochs = total_epochs
        self.epochs = epochs or {}
        self.interval = interval
        self.stream = stream or sys.stdout
        self.max_finished_rows = max_finished_rows
        self.start = time.monotonic()
        self._last_print = 0.0
        self._dirty = True
        self.interrupted = False

    def stop(self, signum: int) -> None:
        """The driver was interrupted (interrupt.graceful_stop): trials that end now were stopped, not failed."""
        self.interrupted = True

    # -- Tune callback hooks -------------------------------------------------------------------
    def _state(self, trial) -> TrialState:
        return self.states[trial.config["trial"]["id"]]

    def on_trial_start(self, iteration, trials, trial, **info):
        s = self._state(trial)
        s.attempts += 1
        s.status = "running"
        self._event(f"started  {s.info['id']}" + (f" (attempt {s.attempts})" if s.attempts > 1 else ""))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        s = self._state(trial)
        if "epoch" in result:
            s.epoch = result["epoch"]
        if "loss" in result:
            s.loss = result["loss"]
        if "val_macro_f1" in result:
            s.val_f1 = max(result["val_macro_f1"], s.val_f1 or 0.0)
        if "eval_macro_f1" in result and self.show_eval:
            s.eval_f1 = result["eval_macro_f1"]
        self._dirty = True

    def on_trial_recover(self, iteration, trials, trial, **info):
        s = self._state(trial)
        if self.interrupted:
            return self._interrupted(s)
        s.status = "retrying"
        self._event(f"FAILED   {s.info['id']} (attempt {s.attempts}); retrying: {_error_line(trial)}")

    def on_trial_error(self, iteration, trials, trial, **info):
        s = self._state(trial)
        if self.interrupted:
            return self._interrupted(s)
        s.status = "failed"
        self._event(f"FAILED   {s.info['id']} after {s.attempts} attempt(s): {_error_line(trial)}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        s = self._state(trial)
        last = trial.last_result or {}
        run_dir = Path(s.info["config"]["run"]["output_dir"])
        if "evaluated" in last or (run_dir / "metrics.json").is_file():  # the final report, or the file if shared
            s.status = "finished"
            if self.show_eval:
                s.eval_f1 = last.get("eval_macro_f1", s.eval_f1)
                self._event(f"finished {s.info['id']}: eval macro-F1 {_f(s.eval_f1)} on {s.info['eval_part']}")
            else:
                self._event(f"finished {s.info['id']} (best val macro-F1 {_f(s.val_f1)})")
        elif (run_dir / "early_stopped.json").is_file():
            s.status = "stopped"
            self._event(f"stopped  {s.info['id']} early at epoch {s.epoch} (ASHA, val macro-F1 {_f(s.val_f1)})")
        else:
            s.status = "ended"
            self._event(f"ended    {s.info['id']} without an evaluation (interrupted?)")

    def _interrupted(self, s: TrialState) -> None:
        s.status = "ended"
        self._event(f"stopped  {s.info['id']} (interrupted; --resume continues it from its last checkpoint)")

    def on_step_end(self, iteration, trials, **info):
        if self._dirty and time.monotonic() - self._last_print >= self.interval:
            self.print_table()

    def on_experiment_end(self, trials, **info):
        self.print_table()

    # -- output --------------------------------------------------------------------------------
    def _event(self, text: str) -> None:
        print(f"[{self._clock()}] {text}", file=self.stream, flush=True)
        self._dirty = True

    def _clock(self) -> str:
        s = int(time.monotonic() - self.start)
        return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"

    def best_so_far(self) -> str:
        """The configuration (a trial record's `group`: a grid point, a study's candidate and point, a batch's
        dataset and method) with the best mean evaluation macro-F1 yet; a tie goes to the first planned."""
        cv = [s for s in self.states.values() if s.info["outer"] is None]  # inner trials score other folds
        order = list(dict.fromkeys(s.info["group"] for s in cv))
        by_group = defaultdict(list)
        for s in cv:
            if s.status == "finished" and s.eval_f1 is not None:
                by_group[s.info["group"]].append(s.eval_f1)
        if not by_group:
            return "best so far: -"
        group, f1s = max(by_group.items(), key=lambda kv: (sum(kv[1]) / len(kv[1]), -order.index(kv[0])))
        of = sum(s.info["group"] == group for s in cv)
        return f"best so far: {group} mean eval macro-F1 {sum(f1s) / len(f1s):.4f} ({len(f1s)}/{of} trials)"

    def eta(self) -> str:
        """' | ETA ~N min': the time per ended trial so far times the trials not yet ended (none before one ends)."""
        ended = sum(s.status in ("finished", "stopped", "ended", "failed") for s in self.states.values())
        left = len(self.states) - ended
        if not ended or not left:
            return ""
        return f" | ETA ~{(time.monotonic() - self.start) / ended * left / 60:.0f} min"

    def print_table(self) -> None:
        self._last_print, self._dirty = time.monotonic(), False
        counts = defaultdict(int)
        for s in self.states.values():
            counts[s.status] += 1
        summary = ", ".join(f"{counts[k]} {k}" for k in ("running", "retrying", "pending", "finished", "stopped", "ended", "failed")
                            if counts[k])
        rows = [s for s in self.states.values() if s.status in ("running", "retrying", "failed")]
        done = [s for s in self.states.values() if s.status in ("finished", "stopped")]
        rows += done[-self.max_finished_rows:] if len(self.states) > 20 else done
        lines = [f"[{self._clock()}] {len(self.states)} trials: {summary} | {self.best_so_far()}{self.eta()}"]
        if rows:
            width = max(len(s.info["id"]) for s in rows) + 2  # long study ids never run into the status
            lines.append(f"  {'trial':<{width}}{'status':<10}{'epoch':>8}{'loss':>9}{'val F1':>9}{'eval F1':>9}{'tries':>7}")
            for s in rows:
                total = self.epochs.get(s.info["id"], self.total_epochs)
                epoch = f"{s.epoch}/{total}" if s.epoch is not None else "-"
                lines.append(f"  {s.info['id']:<{width}}{s.status:<10}{epoch:>8}{_f(s.loss):>9}{_f(s.val_f1):>9}"
                             f"{_f(s.eval_f1):>9}{s.attempts:>7}")
        print("\n".join(lines), file=self.stream, flush=True)


def _f(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _error_line(trial) -> str:
    """The last line of the trial's error file (Tune keeps the traceback there)."""
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text().strip().splitlines() if path else []
    except OSError:
        text = []
    return text[-1][:200] if text else "see the trial's train.log"
