"""The report's figures, drawn from arrays (no file reading here).

Figures are built with matplotlib.figure.Figure directly, not pyplot: no backend is selected, no
display is needed, and figures are freed as soon as they go out of scope (pyplot keeps them alive).
Saving to PNG uses the Agg canvas.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DIFFUSION_COLOR, PRIOR_COLOR = "#1f77b4", "#ff7f0e"


def label_style(class_names: Sequence[str]) -> dict:
    """Tick-label rotation and size that keep class names apart at 2-30 classes: upright only for a
    few short names, else vertical (a name then needs only its font height of the tick spacing),
    smaller past 12 classes."""
    k, longest = len(class_names), max((len(str(c)) for c in class_names), default=1)
    size = 8 if k <= 12 else (7 if k <= 20 else 6)
    if k * max(longest, 2) <= 24:  # the whole row fits in ~24 characters
        return {"rotation": 0, "fontsize": size}
    return {"rotation": 90, "fontsize": size}


def class_ticks(ax: Axes, class_names: Sequence[str], *, y: bool = False) -> None:
    """Class names on the x axis (and the y axis), legible at 2-30 classes (label_style)."""
    ax.set_xticks(range(len(class_names)), class_names, **label_style(class_names))
    if y:
        ax.set_yticks(range(len(class_names)), class_names, fontsize=label_style(class_names)["fontsize"])


def anchored_range(values: np.ndarray, min_span: float = 0.05, bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float]:
    """A colour scale for scores in ``bounds`` at least ``min_span`` wide around the values' middle:
    cells that differ by less than that (0.0837 vs 0.0839, under any seed noise) get nearly the same
    colour instead of the two ends of the scale."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return bounds
    lo, hi = float(finite.min()), float(finite.max())
    if hi - lo >= min_span:
        return lo, hi
    mid = (lo + hi) / 2
    lo, hi = max(bounds[0], mid - min_span / 2), min(bounds[1], mid + min_span / 2)
    return (lo, lo + min_span) if lo == bounds[0] else ((hi - min_span, hi) if hi == bounds[1] else (lo, hi))


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def confusion_figure(matrices: dict[str, np.ndarray], class_names: Sequence[str]) -> Figure:
    """Row-normalised confusion matrices side by side (one panel per model), same class order."""
    k = len(class_names)
    side = max(3.5, 0.3 * k + 2.0)
    fig = new_figure(side * len(matrices) + 0.8, side)
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    image = None
    for ax, (title, m) in zip(axes, matrices.items()):
        image = ax.imshow(m, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_title(title)
        class_ticks(ax, class_names, y=True)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true (rows sum to 1)")
        if k <= 12:  # numbers stay legible up to about a dozen classes
            for i in range(k):
                for j in range(k):
                    if m[i, j] >= 0.005:
                        ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                                color="white" if m[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="fraction of the true class")
    return fig


def per_class_f1_figure(class_names: Sequence[str], train_counts: Sequence[float],
                        f1: dict[str, Sequence[float]]) -> Figure:
    """Grouped F1 bars per class, classes sorted by training count (head left), counts on a log axis.

    The shape of the paper's Figures 6 and 7 (per-class scores of two models, classes sorted by
    frequency), with the training count drawn on a second, logarithmic axis.
    """
    order = np.argsort(-np.asarray(train_counts, dtype=float), kind="stable")
    k, n_models = len(class_names), len(f1)
    fig = new_figure(min(max(6.0, 0.35 * k + 2.5), 14.0), 4.2)
    ax = fig.subplots()
    width = 0.8 / n_models
    colors = [DIFFUSION_COLOR, PRIOR_COLOR, "#2ca02c", "#d62728"]
    x = np.arange(k)
    for m, (label, values) in enumerate(f1.items()):
        ax.bar(x + (m - (n_models - 1) / 2) * width, np.asarray(values, dtype=float)[order], width,
               label=label, color=colors[m % len(colors)])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1 on the evaluation part")
    class_ticks(ax, [class_names[i] for i in order])
    ax.set_xlabel("class (sorted by training count)")
    counts_ax = ax.twinx()
    counts_ax.plot(x, np.asarray(train_counts, dtype=float)[order], "k.--", label="training count")
    counts_ax.set_yscale("log")
    counts_ax.set_ylabel("training count (log scale)")
    handles = ax.get_legend_handles_labels()
    extra = counts_ax.get_legend_handles_labels()
    # above the axes: inside, it covered the head classes' bars
    fig.legend(handles[0] + extra[0], handles[1] + extra[1], loc="outside upper center", ncols=3, fontsize=8)
    return fig


def reliability_figure(bins_by_model: dict[str, dict], ece: dict[str, float]) -> Figure:
    """Reliability diagram (accuracy vs confidence per bin) over a confidence histogram, per model."""
    fig = new_figure(4.2 * len(bins_by_model), 5.2)
    axes = fig.subplots(2, len(bins_by_model), squeeze=False, height_ratios=[3, 1], sharex="col")
    for col, (title, bins) in enumerate(bins_by_model.items()):
        top, bottom = axes[0, col], axes[1, col]
        edges = bins["edges"]
        centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        full = bins["count"] > 0
        top.bar(centers[full], bins["accuracy"][full], width[full], color=DIFFUSION_COLOR if col == 0 else PRIOR_COLOR,
                edgecolor="black", linewidth=0.5, label="accuracy")
        # hatched, unfilled: readable over the bar (under-confidence) and above it (over-confidence)
        acc_, conf_ = bins["accuracy"][full], bins["confidence"][full]
        top.bar(centers[full], np.abs(conf_ - acc_), width[full], bottom=np.minimum(acc_, conf_), fill=False,
                hatch="///", edgecolor="red", linewidth=0.5, label="gap to mean confidence")
        top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_ylabel("accuracy")
        top.set_title(f"{title}: ECE {ece[title]:.3f}")
        top.legend(loc="upper left", fontsize=8)
        bottom.bar(centers, bins["count"], width, color="grey", edgecolor="black", linewidth=0.5)
        bottom.set_xlabel("confidence (top-class probability)")
        bottom.set_ylabel("samples")
    return fig


def history_figure(history: Sequence[dict], label: str = "ADPM (diffusion)", kept_epoch: int | None = None,
                   prior: bool = True) -> Figure:
    """Training losses per epoch and the validation macro F1 used to select the checkpoint (the kept
    epoch marked). A run without validation data (train.select=refit's second pass trains on it) gets
    the loss panel alone, saying so, instead of an empty validation panel."""
    validated = any("val_macro_f1" in row for row in history)
    fig = new_figure(9.0 if validated else 5.0, 3.6)
    loss_ax, val_ax = fig.subplots(1, 2) if validated else (fig.subplots(1, 1), None)
    epochs = [row["epoch"] for row in history]
    for key in ("loss", "diffusion", "prior_ce"):
        values = [row.get(key, np.nan) for row in history]
        if not all(np.isnan(values)):
            loss_ax.plot(epochs, values, marker=".", label=key)
    for key in ("val_diffusion", "val_prior_ce", "val_loss"):  # the curve train.stop_patience watches
        pts = [(row["epoch"], row[key]) for row in history if key in row]
        if pts:
            loss_ax.plot(*zip(*pts), marker="o", linestyle="--", label=f"{key} (validation)")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")  # short: a long label is cropped at this height
    loss_ax.set_title("training (solid), validation (dashed)" if validated else
                      "training; no validation data in this run (refit: it was trained on)", fontsize=9)
    loss_ax.legend(fontsize=7)
    if len(set(epochs)) == 1:  # one epoch: whole-epoch limits, not matplotlib's +-0.16 around it
        loss_ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    if not validated:
        loss_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return fig
    curves = [("val_macro_f1", label, DIFFUSION_COLOR)] + ([("val_prior_macro_f1", "prior network", PRIOR_COLOR)]
                                                           if prior else [])  # a baseline's "prior" is itself
    for key, name, color in curves:
        pts = [(row["epoch"], row[key]) for row in history if key in row]
        if pts:
            val_ax.plot(*zip(*pts), marker="o", label=name, color=color)
    if kept_epoch is not None:
        val_ax.axvline(kept_epoch, color="black", linestyle="--", linewidth=1, label=f"kept (epoch {kept_epoch})")
    val_ax.set_xlabel("epoch")
    val_ax.set_ylabel("validation macro F1")
    val_ax.set_ylim(0, 1)
    val_ax.legend(fontsize=7)
    for ax in (loss_ax, val_ax):  # epochs are whole numbers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def tsne_figure(panels: list[list[tuple[str, np.ndarray]]], labels: list[np.ndarray], class_names: Sequence[str],
                row_titles: Sequence[str]) -> Figure:
    """A grid of 2-D embeddings (rows: runs, columns: time steps); points coloured by their true class
    (``labels[r]`` for the points of row r)."""
    rows, cols = len(panels), max(len(r) for r in panels)
    fig = new_figure(3.0 * cols + 1.5, 3.0 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    k = len(class_names)
    cmap = matplotlib.colormaps["tab10" if k <= 10 else "tab20"]
    for r, row in enumerate(panels):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row):
                ax.set_axis_off()
                continue
            title, xy = row[c]
            for j in range(k):
                sel = labels[r] == j
                ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=cmap(j % cmap.N), label=class_names[j])
            ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(row_titles[r], fontsize=9)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right center", markerscale=2.5, fontsize=8, title="true class")
    return fig
