"""Predicting a whole part on every rank, exactly once per image, and scoring it.

Each rank samples its own batches (the streaming planner gives it disjoint images); the records are
gathered and de-duplicated by key, so the metrics cover every image of the part exactly once,
whatever the world size. Pure scoring lives in adpm_dist/evaluate.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..evaluate import classification_metrics, readout_nll
from ..files import atomic_write_text
from ..methods import Method
from .tracking import progress


@torch.no_grad()
def predict(method: Method, model, batches, accelerator, seed: int, desc: str = "sampling") -> dict:
    """{keys, labels, scores, prior}: every image once, gathered from all ranks, sorted by key."""
    from accelerate.utils import gather_object

    model.eval()
    levels = method.prediction_levels(model, batches, accelerator.device, lambda n: accelerator.reduce(n, "sum"))
    records = []
    for i, batch in enumerate(progress(batches, acc=accelerator, desc=desc, leave=False)):
        images = batch["image"].to(accelerator.device)
        gen = torch.Generator().manual_seed(seed * 100_003 + accelerator.process_index * 1009 + i)
        with accelerator.autocast():
            scores, prior = method.predictions(model, images, generator=gen, levels=levels)
        for key, label, s, m in zip(batch["key"], batch["label"].tolist(), scores.float().cpu(), prior.float().cpu()):
            records.append((key, label, s.numpy(), m.numpy()))
    records = gather_object(records) if accelerator.num_processes > 1 else records
    unique = {r[0]: r for r in records}
    keys = sorted(unique)
    empty = np.zeros((0, model.num_classes))
    return {
        "keys": keys,
        "labels": np.array([unique[k][1] for k in keys], dtype=np.int64),
        "scores": np.stack([unique[k][2] for k in keys]) if keys else empty,
        "prior": np.stack([unique[k][3] for k in keys]) if keys else empty,
    }


@torch.no_grad()
def validation_losses(method: Method, model, batches, accelerator, seed: int, *, epoch: int) -> dict[str, float]:
    """The method's training losses on validation images, in eval mode, with t and noise drawn from
    fixed per-batch seeds (so successive validations differ only in the weights): the curve that
    ``train.stop_patience`` watches. Sample-weighted means over all ranks, keys prefixed ``val_``."""
    from accelerate.utils import gather_object

    model.eval()
    sums, n = {}, 0
    for i, batch in enumerate(batches):
        images, labels = batch["image"].to(accelerator.device), batch["label"].to(accelerator.device)
        gen = torch.Generator().manual_seed(seed * 100_003 + accelerator.process_index * 1009 + i + 17)
        with accelerator.autocast():
            losses = method.losses(model, images, labels, epoch=epoch, generator=gen)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(labels)
        n += len(labels)
    parts = gather_object([(sums, n)]) if accelerator.num_processes > 1 else [(sums, n)]
    total = sum(part_n for _, part_n in parts)
    keys = sorted({k for part, _ in parts for k in part})
    return {f"val_{k}": sum(part.get(k, 0.0) for part, _ in parts) / total for k in keys} if total else {}


def score(pred: dict, class_names: list[str], *, present_only: bool = False) -> dict:
    """The method's metrics (argmax of its scores), the prior alone's under "prior", and the read-out NLL."""
    metrics = classification_metrics(pred["labels"], pred["scores"].argmax(1), class_names, present_only=present_only)
    metrics["prior"] = classification_metrics(pred["labels"], pred["prior"].argmax(1), class_names,
                                              present_only=present_only)
    metrics["nll"] = readout_nll(pred["scores"], pred["labels"])
    return metrics


def write_predictions(path: Path, pred: dict, class_names: list[str], *, prior: bool = True) -> None:
    """predictions.csv: key, label, the method's prediction and probabilities; with ``prior`` (a
    diffusion method, ``Method.has_diffusion``) also its prior network's. A baseline's "prior" is
    the method itself, so repeating it would only add K identical columns."""
    probs = torch.softmax(torch.as_tensor(pred["scores"]), dim=1).numpy()  # DiffMIC's read-out of y0
    header = ["key", "label", "prediction"] + (["prior_prediction"] if prior else []) + [f"p_{c}" for c in class_names]
    header += [f"prior_p_{c}" for c in class_names] if prior else []  # its AUC/calibration in report.md
    lines = [",".join(header)]
    for k, label, s, mu, p in zip(pred["keys"], pred["labels"], pred["scores"], pred["prior"], probs):
        row = [k, class_names[label], class_names[int(s.argmax())]]
        row += [class_names[int(mu.argmax())]] if prior else []
        lines.append(",".join(row + [f"{v:.6f}" for v in p] + ([f"{v:.6f}" for v in mu] if prior else [])))
    atomic_write_text(path, "\n".join(lines) + "\n")
