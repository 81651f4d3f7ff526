"""A read-out temperature tau chosen on the run's validation data only (tau_norm, posthoc_la, ADPM's
``model.prior_readout=posthoc_la``; docs/baselines.md).

The engine asks a method for ``prediction_levels`` right before it predicts a part (validation at each
validated epoch, the evaluation part once at the end), with the weights about to be predicted. The
methods here use that moment to pick tau for exactly those weights: every value of
``baseline.readout_tau_grid`` is scored on the *validation* images (read from the run's own DataPlan,
never the batches being predicted, which may be the evaluation part) and the one with the best
macro-F1 wins (the first on ties, so the grid's order is the tie-break). The choice goes into the
model's ``readout_tau`` buffer, which the prediction then reads. It is non-persistent: it is
recomputed for whatever weights are loaded (best.pt, a re-evaluation), so a stale value never
travels with a checkpoint. A model predicting without the engine (``python -m adpm_dist.predict``
calls ``model.sample``) chooses it itself at its first prediction (``ChosenTau``), on the validation
data its config names; if those shards are not there, it warns and uses tau = 1. Without validation
data (``data.val_part=none``: train.select=refit's second pass) tau = 1, the balanced-error Bayes
rule of Menon et al. (2021, Sec. 4) and full normalisation for tau-norm.

Nothing is chosen silently (docs/tune.md, "What the recipe trains"):
- a grid of one value is a fixed tau (a study's recipe.yaml carries the CV's choice that way), used
  with or without validation data;
- validation data that holds no image of some class cannot choose tau: a tau that pushes predictions
  toward the tail only costs there (its tail images are missing), so tau = 0 would win and silently
  turn post-hoc LA into CE. Such a choice is flagged and tau = 1 is used instead;
- every choice is kept in ``ValidationTau.record`` (value, where it came from, the grid's scores, the
  classes validation lacked), which the method hands to metrics.json's ``choices`` and the log.

Every rank scores the whole validation set itself (no collective): the ranks compute the same tau
without communicating, whatever the launch mode, at the price of one duplicated pass over the
(small) validation part.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..config import Config

NO_VALIDATION_TAU = 1.0


def add_readout_buffer(model: nn.Module) -> nn.Module:
    """The ``readout_tau`` buffer (non-persistent: never in a state dict or a checkpoint); NaN = not chosen yet."""
    model.register_buffer("readout_tau", torch.tensor(float("nan")), persistent=False)
    return model


class ChosenTau:
    """Mixin of a classifier whose prediction reads ``readout_tau``. The model sets ``choose_tau(device)``
    (choose on validation) and ``validation`` (its ValidationTau); the engine chooses before every
    prediction (``prediction_levels``), anything else at the first prediction."""

    def current_tau(self, device) -> float:
        if math.isnan(float(self.readout_tau)):
            try:
                self.choose_tau(device)
            except OSError as e:  # the validation shards of the training run are not on this machine
                warn_no_validation(self.validation.what, e)
                self.validation.record = tau_record(NO_VALIDATION_TAU, f"validation data unreachable ({e})",
                                                    flag="not chosen: validation data unreachable")
                self.readout_tau.fill_(NO_VALIDATION_TAU)
        return float(self.readout_tau)


def warn_no_validation(what: str, error: Exception) -> None:
    """The one fallback of every read-out: no validation data reachable, so tau = 1 (said on stdout)."""
    print(f"warning: {what}: no validation data to choose tau ({error}); tau = {NO_VALIDATION_TAU:g}", flush=True)


def _is_main_rank() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


class ValidationTau:
    """Scores a read-out's tau grid on the validation data of ``cfg`` (the DataPlan is read once)."""

    def __init__(self, cfg: Config, what: str):
        self.cfg, self.what = cfg, what
        self._source: tuple | None = None
        self.record: dict | None = None  # the last choice (tau_record)

    def __deepcopy__(self, memo) -> "ValidationTau":
        # shared, never copied: the engine predicts with a deep copy of the model (eval_model), and the choice
        # that copy makes must land in the record the method reports
        return self

    def choices(self) -> dict[str, dict]:
        """What a method hands to metrics.json's ``choices``: {"read-out tau": record}, once chosen."""
        return {"read-out tau": self.record} if self.record else {}

    def source(self) -> tuple | None:
        """(manifest, parts, include_keys) of the validation images, or None without validation data."""
        if self._source is None:
            from ..data.manifest import load_manifest
            from ..data.plan import plan_data

            try:
                manifest = load_manifest(self.cfg.data.shards)
            except FileNotFoundError as e:  # e.g. a checkpoint predicting on another machine
                warn_no_validation(self.what, e)
                self._source = ()
                return None
            plan = plan_data(manifest, self.cfg)
            self._source = (manifest, *plan.val_source()) if plan.has_validation else ()
        return self._source or None

    @torch.no_grad()
    def collect(self, inputs_fn: Callable[[torch.Tensor], torch.Tensor], device) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs_fn(images) for every validation image, labels), on this rank alone."""
        from ..data.stream import eval_batches
        from ..data.transforms import transform_for

        manifest, parts, keys = self.source()
        batches = eval_batches(manifest, parts, self.cfg.train.eval_batch_size,
                               transform_for(self.cfg, train=False), include_keys=keys)
        outs, labels = [], []
        for batch in batches:
            outs.append(inputs_fn(batch["image"].to(device)).float().cpu())
            labels.append(batch["label"])
        return torch.cat(outs), torch.cat(labels)

    def choose(self, model: nn.Module, inputs_fn, scores_fn: Callable[[torch.Tensor, float], torch.Tensor],
               device) -> float:
        """Set ``model.readout_tau`` to the grid value whose ``scores_fn(inputs, tau)`` has the best
        validation macro-F1 (a one-value grid: that value; validation lacking a class: flagged, tau = 1);
        returns it. ``self.record`` says which and why."""
        grid = list(self.cfg.baseline.readout_tau_grid)
        if len(grid) == 1:
            self.record = tau_record(grid[0], "fixed: baseline.readout_tau_grid has one value")
        elif self.source() is None:
            self.record = tau_record(NO_VALIDATION_TAU, "no validation data: the balanced-error rule "
                                     "(Menon et al. 2021)", flag="not chosen: no validation data")
        else:
            was_training = model.training
            model.eval()
            inputs, labels = self.collect(inputs_fn, device)
            model.train(was_training)
            self.record = choose_on_validation(grid, labels, lambda g: scores_fn(inputs, g).argmax(1), model.num_classes)
        if _is_main_rank():
            print(f"{self.what}: {describe(self.record)}", flush=True)
        model.readout_tau.fill_(self.record["value"])
        return self.record["value"]


def tau_record(value: float, source: str, *, flag: str | None = None, scores: dict | None = None,
               missing: list[int] | None = None) -> dict:
    """One read-out choice as metrics.json's ``choices`` keeps it; ``fix`` is the setting that makes a
    run use exactly this value (what a study's recipe carries)."""
    return {"value": float(value), "source": source, "flag": flag, "grid_scores": scores or {},
            "missing_classes": missing or [], "fix": {"baseline.readout_tau_grid": [float(value)]}}


def choose_on_validation(grid: list[float], labels: torch.Tensor, predict: Callable[[float], torch.Tensor],
                         num_classes: int) -> dict:
    """The grid value with the best validation macro-F1 (first on ties), unless validation lacks a class:
    then nothing is chosen (flagged) and tau = 1 (see the module's docstring)."""
    from ..evaluate import classification_metrics

    names = [str(j) for j in range(num_classes)]
    f1 = {g: classification_metrics(labels.numpy(), predict(g).numpy(), names, present_only=True)["macro_f1"]
          for g in grid}
    missing = sorted(set(range(num_classes)) - set(labels.tolist()))
    if missing:
        return tau_record(NO_VALIDATION_TAU, "validation lacks some classes: the balanced-error rule", scores=f1,
                          missing=missing, flag=f"not chosen: validation holds no image of class(es) {missing}")
    best = max(grid, key=lambda g: (f1[g], -grid.index(g)))
    return tau_record(best, f"chosen on validation (macro-F1 {f1[best]:.4f})", scores=f1)


def describe(record: dict) -> str:
    grid = ", ".join(f"{g:g}:{v:.3f}" for g, v in record["grid_scores"].items())
    return (f"tau = {record['value']:g}, {record['source']}" + (f" [{record['flag']}]" if record["flag"] else "")
            + (f" (grid {grid})" if grid else ""))
