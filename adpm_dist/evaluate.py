"""Classification metrics and the run summary table.

Metrics are computed over all de-duplicated predictions at once (docs/algorithm.md, "Metrics"), never averaged
per batch as DiffMIC did. Every function here is pure over arrays: gathering predictions from the
ranks and de-duplicating them by key is engine.predict's job.
"""
from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, precision_recall_fscore_support


def classification_metrics(labels: Sequence[int], predictions: Sequence[int], class_names: Sequence[str], *,
                           present_only: bool = False) -> dict:
    """accuracy, macro P/R/F1, balanced accuracy and per-class P/R/F1/support.

    ``present_only``: the macro averages over the classes that occur in ``labels`` only (validation
    data that has no image of a rare class must not score that class 0 for every checkpoint).
    """
    y, p = np.asarray(labels), np.asarray(predictions)
    ids = list(range(len(class_names)))
    prec, rec, f1, support = precision_recall_fscore_support(y, p, labels=ids, zero_division=0)
    over = support > 0 if present_only and support.any() else np.ones(len(ids), dtype=bool)
    return {
        "accuracy": float(accuracy_score(y, p)),
        "macro_f1": float(f1[over].mean()),
        "macro_precision": float(prec[over].mean()),
        "macro_recall": float(rec[over].mean()),
        # = sklearn's balanced_accuracy_score (mean recall over the classes present in y), computed
        # from the recalls above with labels= given, so a class predicted but absent from y (small
        # validation data) does not warn "y_pred contains classes not in y_true"
        "balanced_accuracy": float(rec[support > 0].mean()) if support.any() else 0.0,
        "n_samples": int(len(y)),
        "per_class": {name: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(class_names)},
    }


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts C[i, j] = #samples of true class i predicted as j (rows: truth, as scikit-learn)."""
    y, p = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} differ in shape")
    for name, a in (("labels", y), ("predictions", p)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}), got range [{a.min()}, {a.max()}]")
    return np.bincount(y * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def normalize_rows(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the diagonal becomes per-class recall); empty rows stay 0."""
    counts = np.asarray(counts, dtype=np.float64)
    sums = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, sums, out=np.zeros_like(counts), where=sums > 0)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank (what the Mann-Whitney AUC needs)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # start index of each run of equal values, and the run each sorted element belongs to
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    run = np.cumsum(np.r_[True, sorted_x[1:] != sorted_x[:-1]]) - 1
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    ranks[order] = ((starts + 1 + ends) / 2.0)[run]  # mean of ranks starts+1 .. ends
    return ranks


def one_vs_rest_auc(labels: Sequence[int], probs: np.ndarray) -> dict:
    """ROC AUC of class k against the rest from the scores probs[:, k], for every k, and their mean.

    AUC = P(score of a positive > score of a negative) + 0.5 P(tie) (Mann-Whitney U / (n_pos n_neg)).
    A class with no positive or no negative sample has no AUC (NaN) and is left out of the macro mean,
    as scikit-learn's roc_auc_score(multi_class="ovr", average="macro") would refuse it.
    """
    y, s = np.asarray(labels, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != y.shape[0]:
        raise ValueError(f"probs must be (n_samples, n_classes) for {y.shape[0]} labels, got {s.shape}")
    per_class = np.full(s.shape[1], np.nan)
    for k in range(s.shape[1]):
        pos = y == k
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos and n_neg:
            rank_sum = _average_ranks(s[:, k])[pos].sum()
            per_class[k] = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    defined = per_class[~np.isnan(per_class)]
    return {"per_class": per_class, "macro": float(defined.mean()) if defined.size else float("nan")}


def calibration_bins(labels: Sequence[int], probs: np.ndarray, n_bins: int = 15) -> dict:
    """Top-label reliability bins (Guo et al. 2017): equal-width confidence bins (lo, hi], 0 in the first.

    confidence = max_k probs[:, k], correct = (argmax == label). Per bin: count, mean confidence,
    accuracy (NaN for empty bins). ``edges`` has n_bins + 1 entries.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    y, s = np.asarray(labels, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != y.shape[0]:
        raise ValueError(f"probs must be (n_samples, n_classes) for {y.shape[0]} labels, got {s.shape}")
    conf = s.max(axis=1) if len(y) else np.zeros(0)
    correct = (s.argmax(axis=1) == y).astype(np.float64) if len(y) else np.zeros(0)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.digitize(conf, edges[1:-1], right=True)  # bin b holds edges[b] < conf <= edges[b+1]
    count = np.bincount(which, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(which, weights=correct, minlength=n_bins) / count
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": accuracy}


def expected_calibration_error(labels: Sequence[int], probs: np.ndarray, n_bins: int = 15) -> float:
    """ECE = sum_b (n_b / n) |accuracy_b - mean confidence_b| over the bins of calibration_bins."""
    bins = calibration_bins(labels, probs, n_bins)
    n = bins["count"].sum()
    if n == 0:
        return float("nan")
    full = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][full] - bins["confidence"][full])
    return float((bins["count"][full] / n * gaps).sum())


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1) over runs or folds, ignoring None and NaN; the std
    of a single value is NaN, and both are NaN for none."""
    vals = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def format_mean_std(values: Sequence[float | None], digits: int = 3, missing: str = "n/a") -> str:
    """'mean ± std' as the paper's tables print it; just the mean for one value."""
    return format_pm(*mean_std(values), digits=digits, missing=missing)


def format_pm(mean: float, std: float, digits: int = 3, missing: str = "-") -> str:
    """'mean ± std' of an already computed pair; just the mean when std is NaN, ``missing`` for no mean."""
    if math.isnan(mean):
        return missing
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def frequency_thirds(counts: Sequence[float]) -> dict[str, list[int]]:
    """Class indices split into head / medium / tail thirds by training count (largest first, ties by
    index); K not divisible by 3: the earlier groups get the extra class (K = 10: 4 / 3 / 3)."""
    order = sorted(range(len(counts)), key=lambda j: (-counts[j], j))
    parts = np.array_split(np.array(order, dtype=int), 3)
    return {name: [int(j) for j in part] for name, part in zip(("head", "medium", "tail"), parts)}


def sample_nll(scores: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """-log softmax(scores)[label] of every sample (the read-out's per-sample loss)."""
    z = np.asarray(scores, dtype=np.float64)
    if len(z) == 0:
        return np.zeros(0)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(z)), np.asarray(labels)]


def readout_nll(scores: np.ndarray, labels: Sequence[int]) -> float:
    """Mean -log softmax(scores)[label]: the continuous validation score that breaks macro-F1 ties."""
    losses = sample_nll(scores, labels)
    return float(losses.mean()) if len(losses) else float("nan")


def class_losses(scores: np.ndarray, labels: Sequence[int], class_names: Sequence[str]) -> dict[str, list[float]]:
    """Per-sample read-out NLL grouped by true class (classes without samples left out): what the
    noise-law fit (eq. 7) reads from a prior-only run's validation."""
    losses, labels = sample_nll(scores, labels), np.asarray(labels)
    return {name: [float(x) for x in losses[labels == j]] for j, name in enumerate(class_names)
            if (labels == j).any()}


def model_label(metrics: dict) -> str:
    """What a run's main predictions are called: the method's title (recorded by the engine since
    metrics.json had it; an older run's from the registry), or its name if it is no longer known."""
    if metrics.get("method_title"):
        return metrics["method_title"]
    from .methods import REGISTRY  # late: the methods import the metrics' neighbours

    name = metrics.get("method", "adpm")
    return REGISTRY[name].title if name in REGISTRY else name


def has_prior(metrics: dict) -> bool:
    """Whether a run's predictions come with a separate prior network's (a diffusion method's
    ``Method.has_diffusion``, recorded by the engine; an older run's from the registry). A baseline's
    metrics.json still carries a "prior" block, but it is the method itself: reports leave it out."""
    if "has_diffusion" in metrics:
        return bool(metrics["has_diffusion"])
    from .methods import REGISTRY  # late: the methods import the metrics' neighbours

    name = metrics.get("method", "adpm")
    return REGISTRY[name].has_diffusion if name in REGISTRY else True


def format_table(metrics: dict) -> str:
    """Headline metrics of the method (and, for a diffusion method, its prior network alone), then
    per-class F1 (with lambda_j and the prior's F1 where the method has them), as a plain-text table."""
    main, prior = model_label(metrics), has_prior(metrics)
    rows = [(main, metrics)] + ([("prior network", metrics["prior"])] if prior else [])
    keys = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "balanced_accuracy")
    width = max(18, *(len(name) + 2 for name, _ in rows))
    lines = [f"{'':{width}}" + "".join(f"{k:>18}" for k in keys)]
    lines += [f"{name:{width}}" + "".join(f"{m[k]:>18.4f}" for k in keys) for name, m in rows]
    lines.append("")
    levels = metrics.get("noise_levels") or {}
    lines.append(f"{'class':>10}{'support':>9}" + (f"{'lambda':>9}" if levels else "") + f"{'F1':>10}"
                 + (f"{'F1 prior':>10}" if prior else ""))
    for name, pc in metrics["per_class"].items():
        lines.append(f"{name:>10}{pc['support']:>9}" + (f"{levels.get(name, float('nan')):>9.3f}" if levels else "")
                     + f"{pc['f1']:>10.4f}" + (f"{metrics['prior']['per_class'][name]['f1']:>10.4f}" if prior else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m adpm_dist.evaluate show RUN_DIR`: print a run's metrics table."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "show":
        print("usage: python -m adpm_dist.evaluate show RUN_DIR", file=sys.stderr)
        return 2
    path = Path(argv[1]) / "metrics.json"
    if not path.is_file():
        print(f"error: {path} not found (did training finish?)", file=sys.stderr)
        return 1
    metrics = json.loads(path.read_text())
    print(f"{path}: {metrics['n_samples']} samples of part '{metrics.get('eval_part')}'")
    print(format_table(metrics))
    if sel := metrics.get("selection"):
        print(f"selection: rule {sel.get('rule')}, epoch {sel.get('epoch')}, tied epochs {sel.get('tied_epochs')}"
              + (f"\nwarning: {sel['warning']}" if sel.get("warning") else ""))
    if "prior_agreement" in metrics:
        print(f"prior_agreement: {metrics['prior_agreement']:.4f} (the diffusion's prediction equals its prior's)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
