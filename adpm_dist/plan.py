"""Which parts and keys each training phase reads, from the manifest alone (no image is read).

The evaluation part is never trained on and never selected on: the checkpoint is selected on a
validation carve-out of the training parts (DiffMIC selected on the test set: ADPM_SPEC 2.6).
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import Config
from .data.manifest import Manifest
from .data.validation import carve_validation


@dataclass
class DataPlan:
    """Which parts and keys each phase reads; computed from the manifest alone (no images read)."""
    train_parts: list[str]
    eval_part: str
    val_keys: frozenset[str]
    class_counts: list[int]  # per class, training samples actually trained on (eq. 14 uses these)


def plan_data(manifest: Manifest, cfg: Config) -> DataPlan:
    data = cfg.data
    parts = list(manifest.parts)
    if data.eval_part not in parts:
        raise ValueError(f"data.eval_part: {data.eval_part!r} is not a part of {manifest.root} (parts: {parts})")
    train_parts = data.train_parts or [p for p in parts if p not in (data.eval_part, "test")]
    for p in train_parts:
        if p not in parts:
            raise ValueError(f"data.train_parts: {p!r} is not a part of {manifest.root} (parts: {parts})")
        if p == data.eval_part:
            raise ValueError(f"data.train_parts includes the evaluation part {p!r}")
    if not train_parts:
        raise ValueError(f"no training parts left in {manifest.root} once {data.eval_part!r} is held out")
    rows = manifest.rows(train_parts)
    val_keys = carve_validation(((r.key, r.label, r.group) for r in rows), data.val_fraction, cfg.run.seed)
    counts = [0] * len(manifest.class_names)
    for r in rows:
        if r.key not in val_keys:
            counts[r.label] += 1
    return DataPlan(train_parts, data.eval_part, val_keys, counts)
