"""Which checkpoint a run keeps (``train.select``): pure functions over the validation history.

Rules (docs/baselines.md, "Model selection"):
- ``best`` (default): the highest validation macro-F1; an exact tie goes to the lower validation NLL
  of the method's read-out probabilities (softmax of its scores: ADPM's denoised y0 as DiffMIC reads
  it out, a classifier's logits). With tiny long-tailed validation data macro-F1 moves in steps of
  one image and saturates, so ties are common; the NLL is continuous and still rewards confidence
  on the validated classes. Before this rule a tie kept the earliest epoch, whatever came after.
- ``last``: the last epoch, what most long-tail papers report; validation is only watched.
- ``refit``: choose the epoch count with ``best`` on validation, then train again on the training
  and validation data together for that many epochs and keep the last epoch (for small datasets,
  where every image held out is an image the model never sees).

Stopping (``train.stop_patience``, any rule): training ends once the method's validation loss (its
``plateau_loss``: ADPM's diffusion loss, a classifier's training loss, on the validation images with
fixed t and noise draws) has not improved on its best earlier value by more than ``train.stop_min_delta``
(relative) for ``stop_patience`` validations in a row; ``train.epochs`` is then the cap. The paper trains
for 1000 epochs; this is "until the denoiser's validation loss has plateaued".
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

RULES = ("best", "last", "refit")
SATURATION_EPOCHS = 3  # the best score reached at more than this many validations: selection is a coin toss
RISING = 0.01          # a last validation this much above every earlier one: the run was still improving


@dataclass(frozen=True)
class Validation:
    """One validated epoch (1-based ``epoch``)."""
    epoch: int
    macro_f1: float
    nll: float
    loss: float = math.nan  # the method's validation loss (plateau_loss), for stopping and the curve


def is_better(new: Validation, best: Validation | None) -> bool:
    """``best`` rule: higher macro-F1; on an exact tie, lower NLL (NaN NLL never wins a tie)."""
    if best is None:
        return True
    if new.macro_f1 != best.macro_f1:
        return new.macro_f1 > best.macro_f1
    return not math.isnan(new.nll) and (math.isnan(best.nll) or new.nll < best.nll)


def keeps(rule: str, new: Validation, best: Validation | None) -> bool:
    """Whether a run under ``rule`` replaces its kept checkpoint with this validation's weights."""
    return True if rule == "last" else is_better(new, best)


def tied_epochs(history: list[Validation], score: float) -> list[int]:
    """Every validated epoch whose macro-F1 equals ``score``."""
    return [v.epoch for v in history if v.macro_f1 == score]


def selection_record(rule: str, kept: Validation, history: list[Validation]) -> dict:
    """What metrics.json records under ``selection``."""
    best_score = max(v.macro_f1 for v in history)
    return {
        "rule": rule,
        "epoch": kept.epoch,
        "val_metric": "macro_f1",
        "val_macro_f1": kept.macro_f1,
        "val_nll": kept.nll,
        "tie_break": "val_nll" if rule != "last" else None,
        "tied_epochs": tied_epochs(history, best_score),
        "history": [asdict(v) for v in history],
    }


def plateaued(losses: list[float], *, patience: int, min_delta: float) -> bool:
    """Whether the last ``patience`` losses all stayed above (1 - min_delta) x the best loss before
    them; False while there are not more than ``patience`` losses, and with patience 0 (off)."""
    finite = [x for x in losses if not math.isnan(x)]
    if patience <= 0 or len(finite) <= patience:
        return False
    best_before = min(finite[:-patience])
    return min(finite[-patience:]) > best_before - min_delta * abs(best_before)


def saturation_warning(history: list[Validation]) -> str | None:
    """A warning when validation cannot tell epochs apart: its best is 1.0, or reached too often."""
    if not history:
        return None
    best_score = max(v.macro_f1 for v in history)
    tied = tied_epochs(history, best_score)
    if best_score >= 1.0 or len(tied) > SATURATION_EPOCHS:
        return (f"validation saturates: macro-F1 {best_score:.4f} at epochs {tied}; the kept epoch is decided by "
                "the tie-break, not by macro-F1 (more validation data, or train.select=last|refit)")
    return None


def epoch_choice(selected: dict, *, total: int, has_validation: bool, missing: list[str] = ()) -> dict:
    """The kept epoch as metrics.json's ``choices`` records it: value (1-based, warm-up included), where it
    came from, a flag when validation could not choose, ``rising_at_end`` (kept at the last validation
    of several: more epochs might have scored higher) and ``fix``: ``train.stop_at_epoch``, which ends a run
    of the same config at exactly these weights' epoch, on the same LR schedule (a shorter train.epochs
    would compress the schedule: another model than the one validated).

    ``selected`` is metrics.json's ``selection`` record (a refit's holds the first pass's choice); ``missing``:
    classes the validation data held no image of (the kept epoch is then blind to them: flagged)."""
    epoch = int(selected.get("refit_epochs") or selected["epoch"])
    history = selected.get("history") or []
    if selected.get("refit_epochs"):
        source = f"chosen on validation in refit's first pass (epoch {epoch} of {total}), then trained on " \
                 "training + validation data"
    elif not has_validation:
        source = "fixed: train.epochs (no validation data)"
    elif selected.get("rule") == "last":
        source = "fixed: the last epoch (train.select=last)"
    else:
        source = f"chosen on validation: best macro-F1 (epoch {epoch} of {total})"
    rising = selected.get("rule") != "last" and still_rising(history)
    flags = [f"validation holds no image of {list(missing)}: the kept epoch is blind to them"] if missing else []
    flags += [selected["warning"]] if selected.get("warning") else []
    return {"value": epoch, "source": source, "flag": "; ".join(flags) or None, "rising_at_end": rising,
            "fix": {"train.stop_at_epoch": epoch}}


def still_rising(history: list[dict]) -> bool:
    """Whether the last validation beat every earlier one by at least RISING macro-F1 (the run stopped while
    still improving: more epochs might score higher). A tie at the end, common once a cosine schedule has
    annealed, is not rising."""
    scores = [v["macro_f1"] for v in history]
    return len(scores) > 1 and scores[-1] - max(scores[:-1]) >= RISING
