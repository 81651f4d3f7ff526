"""Which parts and keys each training phase reads, from the manifest alone (no image is read).

The evaluation part is never trained on and never selected on: the checkpoint is selected on
validation data (DiffMIC selected on the test set), either a held-out part of its own
(``data.val_part``; digits-LT's balanced `val`), a stratified carve-out of the training parts
(validation.py: the rarest classes keep all their samples), or none (``data.val_part=none``: the
refit pass of ``train.select=refit`` trains on the validation data too).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import Config
from .manifest import Manifest
from .validation import carve_validation, share_out

VAL_PART = "val"  # the part name data.val_part=auto looks for; never trained on unless named in train_parts


@dataclass
class DataPlan:
    """Which parts and keys each phase reads; computed from the manifest alone (no images read)."""
    train_parts: list[str]
    eval_part: str
    val_keys: frozenset[str]  # the carve-out: training-part keys held out for validation (empty with val_part)
    class_counts: list[int]  # per class, training samples actually trained on (eq. 14 uses these)
    val_part: str | None = None  # a held-out validation part, or None for the carve-out
    num_val: int = 0
    warnings: list[str] = field(default_factory=list)
    unused_keys: frozenset[str] = frozenset()  # training-part keys data.train_share leaves out

    @property
    def not_trained(self) -> frozenset[str]:
        """Training-part keys the training stream skips: the carve-out and what data.train_share leaves out."""
        return self.val_keys | self.unused_keys

    @property
    def has_validation(self) -> bool:
        return self.num_val > 0

    def val_source(self) -> tuple[list[str], frozenset[str] | None]:
        """(parts, include_keys) of the validation images, as ``eval_batches`` takes them."""
        return ([self.val_part], None) if self.val_part else (self.train_parts, self.val_keys)

    def describe_val(self) -> str:
        if not self.has_validation:
            return "no validation data (the last epoch is kept)"
        where = f"part {self.val_part!r}" if self.val_part else "carved out of the training parts"
        return f"{self.num_val} validation images ({where})"


def resolve_val_part(val_part: str, parts: list[str], eval_part: str) -> str | None:
    """data.val_part -> the validation part's name, or None for the carve-out."""
    if val_part in ("carve", "none"):
        return None
    if val_part == "auto":
        return VAL_PART if VAL_PART in parts and eval_part != VAL_PART else None
    if val_part not in parts:
        raise ValueError(f"data.val_part: {val_part!r} is not a part of the shards (parts: {parts}); "
                         "use 'auto' or 'carve' for a carve-out of the training parts")
    if val_part == eval_part:
        raise ValueError(f"data.val_part: {val_part!r} is the evaluation part: selecting on it would be "
                         "selecting on the test data")
    return val_part


def plan_data(manifest: Manifest, cfg: Config) -> DataPlan:
    data = cfg.data
    parts = list(manifest.parts)
    if data.eval_part not in parts:
        raise ValueError(f"data.eval_part: {data.eval_part!r} is not a part of {manifest.root} (parts: {parts})")
    val_part = resolve_val_part(data.val_part, parts, data.eval_part)
    held_out = {data.eval_part, "test", VAL_PART} | ({val_part} if val_part else set())
    if data.val_part == "none":  # refit: the validation part, if any, is training data now
        held_out = {data.eval_part, "test"}
    train_parts = data.train_parts or [p for p in parts if p not in held_out]
    for p in train_parts:
        if p not in parts:
            raise ValueError(f"data.train_parts: {p!r} is not a part of {manifest.root} (parts: {parts})")
        if p == data.eval_part:
            raise ValueError(f"data.train_parts includes the evaluation part {p!r}")
        if p == val_part:
            raise ValueError(f"data.train_parts includes the validation part {p!r} (data.val_part)")
    if not train_parts:
        raise ValueError(f"no training parts left in {manifest.root} once {data.eval_part!r} is held out")
    rows = manifest.rows(train_parts)
    if val_part:
        val_keys, num_val = frozenset(), manifest.num_samples[val_part]
    elif data.val_part == "none":
        val_keys, num_val = frozenset(), 0
    else:
        val_keys = carve_validation(((r.key, r.label, r.group) for r in rows), data.val_fraction, cfg.run.seed,
                                    max_share=data.val_max_share, min_train=data.val_min_train)
        num_val = len(val_keys)
    unused = share_out(((r.key, r.label, r.group) for r in rows if r.key not in val_keys), data.train_share,
                       cfg.run.seed)
    counts = [0] * len(manifest.class_names)
    for r in rows:
        if r.key not in val_keys and r.key not in unused:
            counts[r.label] += 1
    plan = DataPlan(train_parts, data.eval_part, val_keys, counts, val_part, num_val, unused_keys=unused)
    if val_part is None and data.val_part != "none":
        plan.warnings += carve_warnings(manifest.class_names, rows, val_keys)
    return plan


def carve_warnings(class_names: list[str], rows, val_keys: frozenset[str]) -> list[str]:
    """Name the classes the carve-out left without validation data (their F1 cannot steer selection)."""
    with_val = {r.label for r in rows if r.key in val_keys}
    missing = [name for i, name in enumerate(class_names) if i not in with_val]
    if not missing:
        return []
    return [f"no validation data for {len(missing)} class(es) (too few training samples to carve from: "
            f"data.val_max_share, data.val_min_train): {', '.join(missing)}; validation macro-F1 averages "
            "over the other classes"]
