"""report.md + PNGs for one finished run: what a clinician-facing researcher looks at first.

Everything is computed from the run directory alone (metrics.json, predictions.csv, config.yaml),
so a report can be (re)drawn for any run, long after training, without the model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from ..evaluate import (calibration_bins, confusion_matrix, expected_calibration_error, model_label,
                        normalize_rows, one_vs_rest_auc)
from ..files import atomic_write_text
from . import plots
from .run_data import RunData, load_run
from .tables import fmt, markdown_table

PRIOR = "prior network"
FIGURES = {"confusion": "confusion_matrix.png", "f1": "per_class_f1.png", "reliability": "reliability.png",
           "history": "training_history.png", "tsne": "tsne.png"}


def run_summary(run: RunData, n_bins: int = 15) -> dict:
    """Confusion matrices, one-vs-rest AUC and ECE for the run's model (ADPM's diffusion or a baseline,
    keyed by ``model_label``) and (if its probabilities were saved) the prior network, from the run's
    de-duplicated predictions."""
    k = len(run.class_names)
    main = model_label(run.metrics)
    out = {"confusion": {main: confusion_matrix(run.labels, run.predictions, k)}, "auc": {}, "ece": {}, "bins": {}}
    if run.has_prior:  # only a diffusion method has a prior network beside it
        out["confusion"][PRIOR] = confusion_matrix(run.labels, run.prior_predictions, k)
    scored = {main: run.probs} | ({PRIOR: run.prior_probs} if run.prior_probs is not None else {})
    for name, probs in scored.items():
        out["auc"][name] = one_vs_rest_auc(run.labels, probs)
        out["bins"][name] = calibration_bins(run.labels, probs, n_bins)
        out["ece"][name] = expected_calibration_error(run.labels, probs, n_bins)
    return out


def _config_line(run_dir: Path, diffusion: bool) -> str:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return ""
    cfg = yaml.safe_load(path.read_text()) or {}
    noise, model = cfg.get("noise", {}), cfg.get("model", {})
    shards = f"shards: {cfg.get('data', {}).get('shards')}"
    if not diffusion:  # a baseline has no noise law, denoiser or encoder
        return f"method: {cfg.get('method')} | model: backbone {model.get('backbone')} | {shards}"
    return (f"noise: formula {noise.get('formula')}, alpha {noise.get('alpha', float('nan')):.4g}, "
            f"beta {noise.get('beta')}, test rule {noise.get('test_rule')} | model: prior {model.get('backbone')}, "
            f"encoder {model.get('encoder')}, hidden {model.get('hidden_dim')} | {shards}")


def _headline(run: RunData, summary: dict) -> str:
    main, rows = model_label(run.metrics), []
    models = [(main, run.metrics)] + ([(PRIOR, run.metrics["prior"])] if run.has_prior else [])
    for name, m in models:
        auc = summary["auc"].get(name, {}).get("macro")
        rows.append([name, fmt(m["accuracy"]), fmt(m["macro_f1"]), fmt(m["macro_precision"]), fmt(m["macro_recall"]),
                     fmt(m["balanced_accuracy"]), fmt(auc), fmt(summary["ece"].get(name))])
    return markdown_table(["model", "accuracy", "macro F1", "macro precision", "macro recall", "balanced acc.",
                           "macro AUC (OvR)", "ECE"], rows)


def _per_class(run: RunData, summary: dict) -> str:
    """Per-class rows; lambda_j only where the method has noise levels, the prior's columns only
    where it has a prior network."""
    counts = run.train_counts()
    levels = run.metrics.get("noise_levels") or {}
    auc = summary["auc"][model_label(run.metrics)]["per_class"]
    prior_auc = summary["auc"].get(PRIOR, {}).get("per_class")
    rows = []
    for i in np.argsort(-np.asarray(counts), kind="stable"):
        c = run.class_names[i]
        d = run.metrics["per_class"][c]
        row = [c, f"{counts[i]:.0f}"] + ([fmt(levels.get(c))] if levels else [])
        row += [str(d["support"]), fmt(d["precision"]), fmt(d["recall"]), fmt(d["f1"]), fmt(float(auc[i]))]
        if run.has_prior:
            p = run.metrics["prior"]["per_class"][c]
            row += [fmt(p["recall"]), fmt(p["f1"]), fmt(float(prior_auc[i]) if prior_auc is not None else None)]
        rows.append(row)
    header = ["class", "train n"] + (["lambda"] if levels else []) + [
        "eval n", "precision", "recall (= class acc.)", "F1", "AUC"]
    return markdown_table(header + (["prior recall", "prior F1", "prior AUC"] if run.has_prior else []), rows)


def _selection(m: dict) -> list[str]:
    """Which epoch was kept, by which rule, and whether validation could tell epochs apart."""
    sel = m.get("selection")
    if not sel:
        return []
    lines = ["## Model selection", "",
             f"Rule `{sel.get('rule')}` (train.select) kept epoch {sel.get('epoch')}"
             + (f" after choosing {sel['refit_epochs']} epochs on validation and refitting on training + validation"
                if sel.get("refit_epochs") else "")
             + f". Validated epochs with the best macro-F1: {sel.get('tied_epochs') or 'n/a'}"
             + (f"; ties broken by the lower validation NLL ({fmt(sel.get('val_nll'))})." if sel.get("tie_break") else ".")]
    if stop := sel.get("stopped"):
        lines += ["", f"Training stopped at epoch {stop['epoch']}: `{stop['loss']}` had not improved by more than "
                      f"{stop['min_delta']:.0%} for {stop['patience']} validations (train.stop_patience)."]
    if sel.get("warning"):
        lines += ["", f"**Warning:** {sel['warning']}"]
    return lines + ["", f"![training history]({FIGURES['history']})", ""]


def _draw_figures(run_dir: Path, run: RunData, summary: dict) -> None:
    names, counts = run.class_names, run.train_counts()
    order = np.argsort(-np.asarray(counts), kind="stable")  # head classes first everywhere
    sorted_names = [names[i] for i in order]
    matrices = {n: normalize_rows(cm)[np.ix_(order, order)] for n, cm in summary["confusion"].items()}
    plots.save(plots.confusion_figure(matrices, sorted_names), run_dir / FIGURES["confusion"])
    f1 = {model_label(run.metrics): [run.metrics["per_class"][c]["f1"] for c in names]}
    if run.has_prior:
        f1[PRIOR] = [run.metrics["prior"]["per_class"][c]["f1"] for c in names]
    plots.save(plots.per_class_f1_figure(names, counts, f1), run_dir / FIGURES["f1"])
    plots.save(plots.reliability_figure(summary["bins"], summary["ece"]), run_dir / FIGURES["reliability"])
    history, kept = run.metrics.get("history") or [], run.metrics.get("best_epoch")
    if history:
        plots.save(plots.history_figure(history, model_label(run.metrics), kept_epoch=kept, prior=run.has_prior),
                   run_dir / FIGURES["history"])


def _introduction(run_dir: Path, run: RunData) -> list[str]:
    m = run.metrics
    agreement = m.get("prior_agreement")
    chain = ""
    if run.has_prior:  # the sampler and the agreement with the prior belong to a diffusion method
        chain = f" Sampler `{m.get('sampler')}`, {m.get('sampling_steps')} steps." + (
            f" The diffusion predicts what its own prior predicts on {100 * agreement:.1f}% of these images "
            "(`prior_agreement`)." if agreement is not None else "")
    return [
        f"# Run report: {run.name}",
        "",
        f"Method: {model_label(m)} (`method={m.get('method', 'adpm')}`). "
        f"Evaluation part `{m.get('eval_part')}`: {m.get('n_samples', len(run.labels))} images, each predicted once "
        f"(de-duplicated over ranks). Checkpoint from epoch {m.get('best_epoch')} (validation macro F1 "
        f"{fmt(m.get('val_macro_f1'))}, selected on validation data, never on this part)." + chain,
        "",
        _config_line(run_dir, run.has_prior),
        "",
    ]


def _headline_note(run: RunData, n_bins: int) -> str:
    note = ("Macro AUC is one-vs-rest, averaged over classes present in this part. ECE uses "
            f"{n_bins} equal-width bins of the top-class probability.")
    if not run.has_prior:
        return note + " Probabilities are the softmax of the classifier's logits."
    return (note + " The diffusion's probabilities are softmax(y0) of ONE reverse-chain sample (DiffMIC's read-out), "
            "scores rather than trained probabilities: read its ECE as \"how far these scores are from probabilities\"."
            + ("" if run.prior_probs is not None else
               " This run's predictions.csv has no prior_p_ columns, so the prior has no AUC/ECE."))


def write_report(run_dir: str | Path, n_bins: int = 15) -> Path:
    """Draw the run's figures and write RUN_DIR/report.md next to them; returns the report's path."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    summary = run_summary(run, n_bins)
    _draw_figures(run_dir, run, summary)
    lines = _introduction(run_dir, run) + [
        "## Headline metrics",
        "",
        _headline(run, summary),
        "",
        _headline_note(run, n_bins),
        "",
        "## Per class (head to tail by training count)",
        "",
        _per_class(run, summary),
        "",
        "Per-class accuracy = recall." + (" lambda = the class's noise level (eq. 14)."
                                         if run.metrics.get("noise_levels") else ""),
        "",
        "## Confusion matrices (row-normalised, classes head to tail)" if run.has_prior else
        "## Confusion matrix (row-normalised, classes head to tail)",
        "",
        f"![confusion matrices]({FIGURES['confusion']})",
        "",
        "## Per-class F1 against training count",
        "",
        f"![per-class F1]({FIGURES['f1']})",
        "",
        "## Reliability",
        "",
        f"![reliability diagram]({FIGURES['reliability']})",
        "",
    ]
    if run.metrics.get("selection"):
        lines += _selection(run.metrics)
    elif run.metrics.get("history"):
        lines += ["## Training", "", f"![training history]({FIGURES['history']})", ""]
    lines += _tsne(run_dir, run.has_prior)
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def _tsne(run_dir: Path, diffusion: bool) -> list[str]:
    if not diffusion:  # no reverse chain to trace
        return []
    if (run_dir / FIGURES["tsne"]).is_file():
        return ["## Denoised label vectors along the reverse chain (t-SNE)", "", f"![t-SNE]({FIGURES['tsne']})", ""]
    return [f"t-SNE of the reverse chain: `python -m adpm_dist.report tsne --run {run_dir}` "
            "(needs the checkpoint and the shards), then re-run `python -m adpm_dist.report show` to link it.", ""]
