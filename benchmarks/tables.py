"""The quality benchmark's pure parts: which runs, head/medium/tail groups, mean +- std, the table.

benchmarks/quality.py is the thin CLI that prepares data and launches the runs; everything it
computes from finished runs (metrics.json) is here, so tests can check it on hand-made numbers.
"""
from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence

import numpy as np

from adpm_dist.evaluate import format_mean_std as format_mean
from adpm_dist.evaluate import frequency_thirds, mean_std  # noqa: F401 (mean_std: re-exported for the CLIs)

# Benchmark entries: name -> (overrides of the run, label). Isotropic diffusion is ADPM with alpha = 0
# (one key per fact: no method of its own).
METHODS: dict[str, tuple[list[str], str]] = {
    "adpm": (["method=adpm"], "ADPM"),
    "isotropic": (["method=adpm", "noise.alpha=0"], "isotropic diffusion (alpha=0, DiffMIC)"),
    "adpm_balanced_prior": (["method=adpm", "model.prior_loss=balanced_softmax"],
                            "ADPM, balanced-softmax prior (not in the paper)"),
    "adpm_frozen_prior": (["method=adpm", "train.freeze_prior=true"],
                          "ADPM, prior frozen after its warm-up (CARD; not in the paper)"),
    "isotropic_frozen_prior": (["method=adpm", "train.freeze_prior=true", "noise.alpha=0"],
                               "isotropic diffusion, prior frozen after its warm-up"),
    "isotropic_balanced_prior": (["method=adpm", "model.prior_loss=balanced_softmax", "noise.alpha=0"],
                                 "isotropic diffusion, balanced-softmax prior"),
    # The one lever that raised mean validation macro-F1 in benchmarks/levers.py (chosen there, on
    # validation only; scored on the test part here, once).
    "adpm_warmup_30": (["method=adpm", "train.prior_warmup_epochs=30"],
                       "ADPM, 30 prior warm-up epochs (lever chosen on validation)"),
    "prior": (["method=prior"], "prior network alone (DCG)"),
    "ce": (["method=ce"], "cross-entropy"),
    "weighted_ce": (["method=weighted_ce"], "class-weighted CE"),
    "focal": (["method=focal"], "focal loss"),
    "logit_adjusted": (["method=logit_adjusted"], "logit-adjusted loss"),
    "balanced_softmax": (["method=balanced_softmax"], "balanced softmax"),
    "ldam_drw": (["method=ldam_drw"], "LDAM-DRW"),
    "resample": (["method=resample"], "class-balanced resampling"),
    # Issue 19 (docs/baselines.md). The two-stage ones (crt, lws, gcl, mislas) add baseline.stage2_epochs
    # class-balanced head epochs after train.epochs (so after --baseline-epochs too).
    "crt": (["method=crt"], "decoupled: classifier re-training (cRT)"),
    "lws": (["method=lws"], "decoupled: learnable weight scaling (LWS)"),
    "tau_norm": (["method=tau_norm"], "decoupled: tau-normalised classifier"),
    "posthoc_la": (["method=posthoc_la"], "post-hoc logit adjustment of CE"),
    "vs": (["method=vs"], "VS loss"),
    "gcl": (["method=gcl"], "GCL + classifier re-training"),
    "mislas": (["method=mislas"], "MiSLAS"),
    "ce_sam": (["method=ce", "train.sam_rho=0.05"], "CE + SAM (rho 0.05)"),
    "logit_adjusted_sam": (["method=logit_adjusted", "train.sam_rho=0.05"], "logit-adjusted loss + SAM (rho 0.05)"),
    "adpm_prior_la": (["method=adpm", "model.prior_readout=posthoc_la"],
                      "ADPM, prior read out with post-hoc logit adjustment"),
}
# The lever sweep (benchmarks/levers.py, issue 8 part 3): ADPM with one setting the paper leaves open
# changed, judged on validation data only. "adpm" and "isotropic" are the quality runs themselves.
MU_ONLY = ["model.reverse_prior=false", "model.feature_product=false"]
LEVERS: dict[str, tuple[list[str], str]] = {
    "adpm": METHODS["adpm"],
    "isotropic": METHODS["isotropic"],
    "alpha_half": (["method=adpm", "noise.alpha=0.5"], "alpha = 1/2 (eq. 14; paper grid)"),
    "alpha_one": (["method=adpm", "noise.alpha=1"], "alpha = 1 (eq. 14; paper grid)"),
    "beta_1": (["method=adpm", "noise.beta=1"], "beta = 1 (eq. 14; paper grid 1..10)"),
    "beta_10": (["method=adpm", "noise.beta=10"], "beta = 10 (eq. 14; paper grid 1..10)"),
    "formula_b": (["method=adpm", "noise.formula=B"], "eq. 14 as formula B (c = 1, raw counts)"),
    "formula_power": (["method=adpm", "noise.formula=power"], "lambda_j = (n_max/n_j)^alpha (c = 0)"),
    "variance": (["method=adpm", "noise.apply=variance"], "lambda scales the variance, not the std (eq. 5)"),
    "eps": (["method=adpm", "diffusion.prediction=eps"], "the paper's eps prediction instead of y0"),
    "no_warmup": (["method=adpm", "train.prior_warmup_epochs=0"], "no prior warm-up (paper: 15 epochs)"),
    "warmup_5": (["method=adpm", "train.prior_warmup_epochs=5"], "5 prior warm-up epochs"),
    "warmup_30": (["method=adpm", "train.prior_warmup_epochs=30"], "30 prior warm-up epochs"),
    "ema": (["method=adpm", "train.ema_decay=0.99", "train.eval_ema=true"], "select and sample EMA(0.99) weights"),
    # The same names as the quality entries, so levers.py reuses those runs (OUT/runs/<dataset>/<name>/).
    "adpm_frozen_prior": (METHODS["adpm_frozen_prior"][0],
                          "prior frozen after its warm-up (CARD's f_phi; DiffMIC and the paper train it jointly)"),
    "isotropic_frozen_prior": (METHODS["isotropic_frozen_prior"][0],
                               "the same with alpha = 0: does anisotropy matter once the prior is frozen?"),
    "adpm_balanced_prior": METHODS["adpm_balanced_prior"],
    "isotropic_balanced_prior": (METHODS["isotropic_balanced_prior"][0],
                                 "the same with alpha = 0: does anisotropy matter with a balanced prior?"),
    # The denoiser without the image (y_t and mu only): its label posterior on training inputs is then as
    # uncertain as mu, the condition under which the oracle (benchmarks/oracle.py) shows anisotropy acting.
    "mu_only": (["method=adpm", *MU_ONLY], "denoiser sees y_t and mu only, no image features"),
    "mu_only_isotropic": (["method=adpm", *MU_ONLY, "noise.alpha=0"], "the same with alpha = 0"),
    "mu_only_frozen": (["method=adpm", *MU_ONLY, "train.freeze_prior=true"],
                       "y_t and mu only, prior frozen after its warm-up"),
    "mu_only_frozen_isotropic": (["method=adpm", *MU_ONLY, "train.freeze_prior=true", "noise.alpha=0"],
                                 "the same with alpha = 0"),
    "mu_only_frozen_alpha_one": (["method=adpm", *MU_ONLY, "train.freeze_prior=true", "noise.alpha=1"],
                                 "the same with alpha = 1, where the oracle's tail shift is a full logit adjustment"),
}
# Sampling-side levers: the selected checkpoint of an "adpm" run sampled again on validation.
SAMPLING_LEVERS: dict[str, tuple[list[str], str]] = {
    "as_trained": ([], "the run's own sampling (truncated 250, one sample): reproduces its validation score"),
    "ddim_10": (["diffusion.sampler=ddim", "diffusion.test_timesteps=10"], "DDIM, 10 steps"),
    "respaced_250": (["diffusion.sampler=respaced"], "respaced 250-step chain over all T"),
    "vote_10": (["diffusion.samples=10"], "CARD majority vote over 10 samples"),
    "argmax_rule": (["noise.test_rule=argmax"], "test lambda of the prior's argmax class (eq. 18)"),
    "soft_counts": (["noise.test_levels=soft_counts"], "lambda_j re-estimated from soft counts (eq. 18)"),
}
# These keep the config's epochs (prior warm-up + joint); the classifier baselines get --baseline-epochs.
DIFFUSION_ENTRIES = tuple(name for name, (overrides, _) in METHODS.items()
                          if {"method=adpm", "method=prior"} & set(overrides))
METRICS = ("macro_f1", "balanced_accuracy", "head_f1", "medium_f1", "tail_f1", "prior_agreement")
HEADERS = ("macro-F1", "balanced acc.", "head F1", "medium F1", "tail F1", "= own prior")
BEGIN, END = "<!-- quality:begin -->", "<!-- quality:end -->"


frequency_groups = frequency_thirds  # head / medium / tail thirds by training count (adpm_dist.evaluate)


def run_scores(metrics: dict, class_names: Sequence[str], groups: dict[str, list[int]]) -> dict[str, float]:
    """The benchmark's numbers of one run: macro-F1, balanced accuracy, mean per-class F1 of each group."""
    f1 = [metrics["per_class"][name]["f1"] for name in class_names]
    scores = {"macro_f1": metrics["macro_f1"], "balanced_accuracy": metrics["balanced_accuracy"]}
    for group, members in groups.items():
        scores[f"{group}_f1"] = float(np.mean([f1[j] for j in members])) if members else float("nan")
    # a diffusion run: the fraction of test images on which it predicts what its own prior predicts
    scores["prior_agreement"] = metrics.get("prior_agreement")
    return scores


def format_mean_std(values: Sequence[float]) -> str:
    """The benchmark tables' cell: evaluate.format_mean_std with "-" for no value."""
    return format_mean(values, missing="-")


def dataset_table(rows: list[dict], methods: Sequence[str], labels: dict[str, tuple] | None = None) -> str:
    """Markdown table of one dataset: one line per method (in ``methods`` order) with the number of
    runs, mean +- std of every METRICS column and the mean minutes per run. ``labels``: name ->
    (overrides, label) entries (default METHODS)."""
    labels = METHODS if labels is None else labels
    lines = ["| method | what | runs | " + " | ".join(HEADERS) + " | min/run |",
             "|---|---|---|" + "---|" * len(HEADERS) + "---|"]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        cells = [format_mean_std([r[m] for r in mine]) for m in METRICS]
        times = [r["seconds"] for r in mine if r.get("seconds") is not None and not math.isnan(r["seconds"])]
        minutes = f"{statistics.fmean(times) / 60:.1f}" if times else "-"
        label = labels[method][1] if method in labels else method
        lines.append(f"| `{method}` | {label} | {len(mine)} | " + " | ".join(cells) + f" | {minutes} |")
    return "\n".join(lines)


def validation_scores(metrics: dict) -> dict[str, float]:
    """What a run's validations say, never its evaluation part: macro-F1 of the selected (best)
    validation, the mean over all validations, and the mean of (diffusion - its own prior) macro-F1
    over all validations (how much the denoiser adds to the prior it starts from; 0 for a method
    without a prior, whose history has no val_prior_macro_f1)."""
    vals = [(row["val_macro_f1"], row.get("val_prior_macro_f1", row["val_macro_f1"])) for row in metrics["history"]
            if "val_macro_f1" in row]
    if not vals:
        raise ValueError("the run's history has no validation rows (val_macro_f1)")
    return {"val_selected": float(metrics["val_macro_f1"]), "val_mean": float(np.mean([v for v, _ in vals])),
            "val_gain_over_prior": float(np.mean([v - p for v, p in vals]))}


LEVER_METRICS = ("val_selected", "val_mean", "val_gain_over_prior")
LEVER_HEADERS = ("selected val macro-F1", "mean val macro-F1", "diffusion - own prior (val)")


def lever_table(rows: list[dict], entries: dict[str, tuple[list[str], str]], metrics: Sequence[str] = LEVER_METRICS,
                headers: Sequence[str] = LEVER_HEADERS) -> str:
    """Markdown table: one line per entry with runs, mean +- std of each metric, the largest lambda_j."""
    lines = ["| lever | what | runs | " + " | ".join(headers) + " | largest lambda_j |",
             "|---|---|---|" + "---|" * len(headers) + "---|"]
    for name, (_, label) in entries.items():
        mine = [r for r in rows if r["lever"] == name]
        if not mine:
            continue
        cells = [format_mean_std([r[m] for r in mine]) for m in metrics]
        lam = [r["max_lambda"] for r in mine if r.get("max_lambda") is not None]
        lam_cell = f"{max(lam):.2f}" if lam else "-"
        lines.append(f"| `{name}` | {label} | {len(mine)} | " + " | ".join(cells) + f" | {lam_cell} |")
    return "\n".join(lines)


def groups_line(class_names: Sequence[str], counts: Sequence[int], groups: dict[str, list[int]]) -> str:
    """'head: 4 (150), 6 (97), ... | medium: ... | tail: ...' (class (training count))."""
    return " | ".join(f"{g}: " + ", ".join(f"{class_names[j]} ({counts[j]})" for j in members)
                      for g, members in groups.items())


def replace_section(text: str, block: str, heading: str = "## Quality: ADPM vs long-tail baselines",
                    markers: tuple[str, str] = (BEGIN, END)) -> str:
    """``text`` with everything between the markers (default: the quality ones) replaced by ``block``
    (markers kept); without markers, the heading, markers and block are appended."""
    begin, end = markers
    section = f"{begin}\n{block.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: section, text, count=1)
    return text.rstrip() + f"\n\n{heading}\n\n{section}\n"


def write_section(path, block: str, heading: str, markers: tuple[str, str]) -> None:
    """``replace_section`` in the results file at ``path`` (created, with a title, when missing)."""
    from pathlib import Path

    path = Path(path)
    text = path.read_text() if path.is_file() else "# Benchmark results\n"
    path.write_text(replace_section(text, block, heading, markers))
