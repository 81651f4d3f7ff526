"""recipe.yaml: the recommendation as one training run that trains what the CV measured.

A trial makes choices on its validation data (metrics.json ``choices``: the kept epoch, a read-out tau,
...; each with the ``fix`` settings that reproduce it). The recipe re-chooses none of them on new data:
it fixes each one from the CV trials of the recommended point (``fixed_choices``), then trains on every
CV fold with no validation (``train.select: last``, ``data.val_part: none``) and scores `test`.
A fresh carve-out of a long-tailed set holds 0-1 images of the rarest classes, so a re-chosen epoch
count or tau is noise (docs/tune.md, "What the recipe trains"); the CV's choices are not.

Aggregation over the trials: the lower median of each setting's values (a value some trial used; for a
one-element list, of its element), recorded with every trial's value in the recipe's header. The epoch
count, where the trials tracked their held-out folds (``train.track_eval``: a study's trials do), is
instead the one whose pooled out-of-fold predictions score best (``pooled_epoch``): each trial chose its
epoch on a carve-out holding 0-1 images of the rarest classes, while the held-out folds together hold
every image of every class once.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from ...config import from_dict, set_key, to_dict
from ...files import atomic_write_text
from .target import prior_scores

# What a recipe run is, whatever the method: every labelled part, the fixed choices, nothing re-chosen.
RECIPE_SETTINGS = {"data.val_part": "none", "train.select": "last", "train.stop_patience": 0}


def lower_median(values: list):
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def fix_of(name: str, choice: dict) -> dict:
    """The settings that reproduce ``choice``. The kept epoch as an older version recorded it (a shorter
    ``train.epochs``: a compressed LR schedule, not the validated model) is read as its epoch."""
    if name == "epochs" and "train.stop_at_epoch" not in choice["fix"]:
        return {"train.stop_at_epoch": int(choice["value"])}
    return choice["fix"]


def pooled_epoch(runs: list[dict], prior: np.ndarray | None = None) -> tuple[int, dict[int, float]] | None:
    """(the epoch whose pooled out-of-fold macro-F1 is highest, that figure at every epoch) or None where a run
    tracked nothing. Each run's held-out-fold confusion counts (metrics.json ``eval_track``) are summed over
    the runs at every epoch all of them scored, and read under ``prior`` (target.py's rescaled rows; default
    balanced). A tie goes to the earliest such epoch, the cheapest to train."""
    tracks = [{int(t["epoch"]): np.asarray(t["confusion"], dtype=float) for t in m.get("eval_track") or []}
              for m in runs]
    common = sorted(set.intersection(*map(set, tracks))) if tracks and all(tracks) else []
    if not common:
        return None
    k = len(tracks[0][common[0]])
    prior = np.full(k, 1.0 / k) if prior is None else np.asarray(prior, dtype=float)
    scores = {e: float(prior_scores(sum(t[e] for t in tracks), prior)["macro_f1"]) for e in common}
    best = max(scores.values())
    return min(e for e in common if scores[e] == best), scores


def pooled_note(pooled: tuple[int, dict[int, float]], trials: int, own: list[int]) -> str:
    """The recipe header's line for a pooled out-of-fold epoch: the curve it was read on, the trials' own."""
    epoch, scores = pooled
    curve = ", ".join(f"{e} {f:.3f}" for e, f in scores.items())
    return (f"train.stop_at_epoch = {epoch}: the best pooled out-of-fold macro-F1 over {trials} trial(s) (epoch "
            f"figure: {curve}); the trials' own choices on their carve-outs: {', '.join(map(str, own))}")


def fixed_choices(runs: list[dict], prior: np.ndarray | None = None) -> tuple[dict, list[str]]:
    """(settings that fix every choice the runs made, one note per choice: its per-run values and flags).
    ``runs``: metrics.json of the CV trials at the recommended point. A run without ``choices`` (written
    before they were recorded) contributes its kept epoch only. The kept epoch is the pooled out-of-fold
    one (``pooled_epoch`` under ``prior``) where every run tracked its held-out fold."""
    values: dict[str, list] = {}
    notes: dict[str, list[str]] = {}
    unrecorded = sum("choices" not in m for m in runs)
    for m in runs:
        for name, choice in (m.get("choices") or {}).items():
            for key, value in fix_of(name, choice).items():
                values.setdefault(key, []).append(value)
            if choice.get("flag"):
                notes.setdefault(name, []).append(choice["flag"])
    settings = {key: [lower_median([x[0] for x in v])] if isinstance(v[0], list) else lower_median(v)
                for key, v in values.items()}
    pooled = pooled_epoch(runs, prior) if "train.stop_at_epoch" in settings else None
    if pooled is not None:
        settings["train.stop_at_epoch"] = pooled[0]
    lines = [pooled_note(pooled, len(runs), v) if pooled is not None and key == "train.stop_at_epoch"
             else f"{key} = {settings[key]} (trials: {', '.join(map(str, v))})" for key, v in values.items()]
    lines += [f"{name}: flagged in {len(f)} trial(s): {f[0]}"
              + ("; not the recipe's: its epoch is read on the held-out folds, which hold every image" if
                 name == "epochs" and pooled is not None else "") for name, f in notes.items()]
    if unrecorded:
        lines.append(f"{unrecorded} trial(s) recorded no choices (written by an older version): the base config's "
                     "train.epochs is used")
    return settings, lines


def write_recipe(path: Path, search: dict, rec, out: Path, figure: str, estimate_text: str,
                 prior: np.ndarray | None = None) -> dict:
    """The recommendation, ready for launch/train.py: the candidate's point with its CV choices fixed, trained
    on every labelled part, scored once on `test` (fold-only shards: fold0, said not to be an estimate).
    ``prior``: the study's target prior, which the pooled out-of-fold epoch is chosen under."""
    cand = next(c for c in search["candidates"] if c["name"] == rec.name)
    point = next(p for p in cand["points"] if p["label"] == rec.selections[None].point)
    fixes, notes = fixed_choices(rec.recipe_runs, prior)
    c = from_dict(json.loads(json.dumps(search["base_config"])))
    has_test = "test" in search["parts"]
    # the CV's folds, all of them: a `val` part the trials validated on is not added, since no trial trained
    # on it (digits-LT's is balanced: added, it lifts the tail far above anything the CV measured)
    # (fold-only shards: the folds but fold0, which the run is scored on; that score is no estimate, as said)
    folds = [f"fold{k}" for k in range(search["folds"])] if "test" in search["parts"] else []
    settings = ({"method": cand["method"]} | cand["fixed"] | point["settings"] | RECIPE_SETTINGS | fixes
                | {"data.train_parts": folds}
                | {"data.eval_part": "test" if has_test else "fold0", "run.output_dir": str(out / "recipe_run")})
    for key, value in settings.items():
        set_key(c, key, value)
    from ...methods import method_for  # imports torch: only when a recipe is written

    if c.train.stop_at_epoch == method_for(c).epochs().total:  # the trials kept their last epoch: nothing to stop
        set_key(c, "train.stop_at_epoch", 0)
    header = [f"# Recommended by the study in {out}: {rec.name} ({point['label']}), macro-F1 {estimate_text} "
              f"({figure})", f"#   accelerate launch launch/train.py --config {path}",
              "# Fixed from the CV trials of this point (nothing is re-chosen on new data; docs/tune.md):"]
    header += [f"#   {line}" for line in notes]
    if not has_test:
        header.append("# The shards have no `test` part: fold0 helped choose this, so this run's score on it is NOT "
                      "an estimate; publish the study's nested estimate (study.md).")
    data = to_dict(c)
    atomic_write_text(path, "\n".join(header) + "\n" + yaml.safe_dump(data, sort_keys=False))
    return data
