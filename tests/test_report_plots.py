"""The report's figures stay legible at 6-30 classes: no overlapping or cropped labels, whole-number
epochs, a heatmap scale that does not make equal scores look opposite (drawn, then measured)."""
from __future__ import annotations

import numpy as np
import pytest

from adpm_dist.report import plots

LONG = ["melanocytic nevi", "melanoma", "benign keratosis", "basal cell carcinoma", "actinic keratoses",
        "vascular lesions"]
MANY = [f"class_{i}_name" for i in range(30)]


def _boxes(fig, texts):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in texts if t.get_text()]


def _inside_and_apart(fig, texts) -> None:
    boxes, frame = _boxes(fig, texts), fig.bbox
    for b in boxes:  # nothing cropped at the figure's edge
        assert frame.x0 - 1 <= b.x0 and b.x1 <= frame.x1 + 1 and frame.y0 - 1 <= b.y0 and b.y1 <= frame.y1 + 1, b
    for a, b in zip(boxes, boxes[1:]):  # neighbours never overlap
        assert not a.overlaps(b), (a, b)


@pytest.mark.parametrize("names", [LONG, MANY], ids=["6 long names", "30 classes"])
def test_class_names_neither_overlap_nor_crop(names):
    k = len(names)
    cm = np.eye(k) * 0.7 + 0.3 / k
    fig = plots.confusion_figure({"logit-adjusted loss": cm}, names)
    _inside_and_apart(fig, fig.axes[0].get_xticklabels())
    _inside_and_apart(fig, fig.axes[0].get_yticklabels())
    fig = plots.per_class_f1_figure(names, list(range(k * 10, 0, -10)), {"LA": np.linspace(0.2, 0.9, k)})
    _inside_and_apart(fig, fig.axes[0].get_xticklabels())


def test_history_has_whole_epochs_and_uncropped_labels():
    history = [{"epoch": e, "loss": 1 / e} | ({"val_macro_f1": 0.5, "val_loss": 1 / e} if e % 2 == 0 else {})
               for e in range(1, 5)]
    fig = plots.history_figure(history, "logit-adjusted loss", kept_epoch=2, prior=False)
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
        _inside_and_apart(fig, [ax.yaxis.label, ax.title])
    assert "prior network" not in [t.get_text() for t in fig.axes[1].get_legend().get_texts()]


def test_heatmap_scale_is_anchored():
    lo, hi = plots.anchored_range(np.array([0.0837, 0.0839, np.nan]))
    assert hi - lo == pytest.approx(0.05) and lo < 0.0837 and hi > 0.0839
    assert plots.anchored_range(np.array([0.2, 0.9])) == (0.2, 0.9)
    assert plots.anchored_range(np.array([0.99, 0.995])) == pytest.approx((0.95, 1.0))


def test_a_refit_history_has_no_empty_validation_panel():
    """train.select=refit's second pass has no validation data: one panel, whole-epoch limits."""
    fig = plots.history_figure([{"epoch": 3, "loss": 0.4, "prior_ce": 0.3}], "ADPM (diffusion)", kept_epoch=3)
    fig.canvas.draw()
    assert len(fig.axes) == 1 and "no validation data" in fig.axes[0].get_title()
    lo, hi = fig.axes[0].get_xlim()
    assert (lo, hi) == (2, 4)
    _inside_and_apart(fig, [fig.axes[0].yaxis.label, fig.axes[0].title])
