"""Which parts every reported figure was selected on and evaluated on; when the search is nested.

Two protocols, chosen from the shards alone:

- ``held_out_test`` (the shards have a `test` part, digits-LT): K-fold CV over the grid picks
  (alpha, beta); the CV table is what the search reports, and `best.yaml` trains the pick and
  evaluates it once on `test`, which the search never read.
- ``nested`` (fold-only shards: PAD-UFES-20, SCIN, Hyper-Kvasir): no part is left that the search
  did not read, so the estimate comes from nested CV. For each outer fold k, the grid is
  cross-validated on the other folds only (inner trials), the best inner point is trained on those
  folds and evaluated once on fold k. The mean +- std over the outer folds is the estimate; the
  K-fold grid table is reported as what it is, a selection table (its best cell is optimistic).

``protocol.json`` (one per experiment directory) is a list with one entry per reported figure,
``{"figure", "selected_on", "evaluated_on", "trained_on", "independent"}``: `selected_on` holds
every part whose scores chose something about the model behind the figure (its (alpha, beta), its
checkpoint), `evaluated_on` the parts it was scored on; `independent` is true when they are
disjoint. A figure that is a mean over folds of separately trained models is
``{"figure", "mean_of": [figure names]}``: each of those carries its own parts.

Pure functions; no Ray, no training.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..data.plan import VAL_PART, resolve_val_part
from ..files import atomic_write_text

HELD_OUT = "held_out_test"
NESTED = "nested"
PROTOCOL_FILE = "protocol.json"
TEST_PART = "test"


def choose_protocol(parts: list[str]) -> str:
    """Nested CV unless the shards hold a `test` part that no trial reads."""
    return HELD_OUT if TEST_PART in parts else NESTED


def checkpoint_selection_parts(train_parts: list[str], parts: list[str], val_part: str, eval_part: str) -> list[str]:
    """The parts engine.train selects the checkpoint on: a validation part, else (carve-out) the training parts."""
    named = resolve_val_part(val_part, parts, eval_part)
    return [named] if named else list(train_parts)


def entry(figure: str, selected_on: list[str], evaluated_on: list[str], trained_on: list[str],
          value: float | None = None, **extra) -> dict:
    """One reported figure; `independent`: nothing it was scored on helped choose it."""
    selected, evaluated = sorted(set(selected_on), key=part_order), sorted(set(evaluated_on), key=part_order)
    return {"figure": figure, "selected_on": selected, "evaluated_on": evaluated,
            "trained_on": sorted(set(trained_on), key=part_order), "value": value,
            "independent": not set(selected) & set(evaluated), **extra}


def mean_entry(figure: str, components: list[dict], value: float | None = None, **extra) -> dict:
    """A mean over folds: each component figure (one trained model each) carries its own parts."""
    return {"figure": figure, "mean_of": [c["figure"] for c in components], "value": value,
            "independent": all(c["independent"] for c in components), **extra}


def part_order(part: str) -> tuple:
    """fold2 before fold10; other parts (val, test) after the folds."""
    return (0, int(part[4:]), "") if part.startswith("fold") and part[4:].isdigit() else (1, 0, part)


def overlapping_figures(entries: list[dict]) -> list[str]:
    """Figures scored on a part that helped choose them (directly or through a component), and
    means that name unknown components: empty when every figure is an honest estimate."""
    by_name = {e["figure"]: e for e in entries}
    problems = []
    for e in entries:
        if "mean_of" in e:
            missing = [n for n in e["mean_of"] if n not in by_name]
            bad = [n for n in e["mean_of"] if n in by_name and overlap(by_name[n])]
            if missing or bad or not e["mean_of"]:
                problems.append(f"{e['figure']}: components {missing or bad or 'none'}")
        elif overlap(e):
            problems.append(f"{e['figure']}: selected on {e['selected_on']}, evaluated on {e['evaluated_on']}")
    return problems


def overlap(e: dict) -> set[str]:
    return set(e.get("selected_on", [])) & set(e.get("evaluated_on", []))


def write_protocol(out: Path, entries: list[dict]) -> Path:
    """protocol.json: one entry per reported figure."""
    path = Path(out) / PROTOCOL_FILE
    lines = ",\n".join(" " + json.dumps(e, ensure_ascii=False) for e in entries)  # one figure a line: greppable
    return atomic_write_text(path, f"[\n{lines}\n]\n")


__all__ = ["HELD_OUT", "NESTED", "PROTOCOL_FILE", "VAL_PART", "choose_protocol", "checkpoint_selection_parts",
           "entry", "mean_entry", "overlapping_figures", "write_protocol"]
