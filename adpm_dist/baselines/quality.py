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

# Benchmark entries: name -> (overrides of the run, label). Isotropic diffusion is ADPM with alpha = 0
# (one key per fact: no method of its own).
METHODS: dict[str, tuple[list[str], str]] = {
    "adpm": (["method=adpm"], "ADPM"),
    "isotropic": (["method=adpm", "noise.alpha=0"], "isotropic diffusion (alpha=0, DiffMIC)"),
    "adpm_balanced_prior": (["method=adpm", "model.prior_loss=balanced_softmax"],
                            "ADPM, balanced-softmax prior (not in the paper)"),
    "prior": (["method=prior"], "prior network alone (DCG)"),
    "ce": (["method=ce"], "cross-entropy"),
    "weighted_ce": (["method=weighted_ce"], "class-weighted CE"),
    "focal": (["method=focal"], "focal loss"),
    "logit_adjusted": (["method=logit_adjusted"], "logit-adjusted loss"),
    "balanced_softmax": (["method=balanced_softmax"], "balanced softmax"),
    "ldam_drw": (["method=ldam_drw"], "LDAM-DRW"),
    "resample": (["method=resample"], "class-balanced resampling"),
}
DIFFUSION_ENTRIES = ("adpm", "isotropic", "adpm_balanced_prior", "prior")  # keep the config's epochs; the others get --baseline-epochs
METRICS = ("macro_f1", "balanced_accuracy", "head_f1", "medium_f1", "tail_f1")
HEADERS = ("macro-F1", "balanced acc.", "head F1", "medium F1", "tail F1")
BEGIN, END = "<!-- quality:begin -->", "<!-- quality:end -->"


def frequency_groups(counts: Sequence[int]) -> dict[str, list[int]]:
    """Class indices split into head / medium / tail thirds by training count (largest first; ties by
    index). K not divisible by 3: the earlier groups get the extra class (K = 10: 4 / 3 / 3)."""
    order = sorted(range(len(counts)), key=lambda j: (-counts[j], j))
    parts = np.array_split(np.array(order, dtype=int), 3)
    return {name: [int(j) for j in part] for name, part in zip(("head", "medium", "tail"), parts)}


def run_scores(metrics: dict, class_names: Sequence[str], groups: dict[str, list[int]]) -> dict[str, float]:
    """The benchmark's numbers of one run: macro-F1, balanced accuracy, mean per-class F1 of each group."""
    f1 = [metrics["per_class"][name]["f1"] for name in class_names]
    scores = {"macro_f1": metrics["macro_f1"], "balanced_accuracy": metrics["balanced_accuracy"]}
    for group, members in groups.items():
        scores[f"{group}_f1"] = float(np.mean([f1[j] for j in members])) if members else float("nan")
    return scores


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); std is NaN for a single value."""
    values = list(values)
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def format_mean_std(values: Sequence[float]) -> str:
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "-"
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def dataset_table(rows: list[dict], methods: Sequence[str]) -> str:
    """Markdown table of one dataset: one line per method (in ``methods`` order) with the number of
    runs, mean +- std of every METRICS column and the mean minutes per run."""
    lines = ["| method | what | runs | " + " | ".join(HEADERS) + " | min/run |",
             "|---|---|---|" + "---|" * len(HEADERS) + "---|"]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        cells = [format_mean_std([r[m] for r in mine]) for m in METRICS]
        times = [r["seconds"] for r in mine if r.get("seconds") is not None and not math.isnan(r["seconds"])]
        minutes = f"{statistics.fmean(times) / 60:.1f}" if times else "-"
        label = METHODS[method][1] if method in METHODS else method
        lines.append(f"| `{method}` | {label} | {len(mine)} | " + " | ".join(cells) + f" | {minutes} |")
    return "\n".join(lines)


def groups_line(class_names: Sequence[str], counts: Sequence[int], groups: dict[str, list[int]]) -> str:
    """'head: 4 (150), 6 (97), ... | medium: ... | tail: ...' (class (training count))."""
    return " | ".join(f"{g}: " + ", ".join(f"{class_names[j]} ({counts[j]})" for j in members)
                      for g, members in groups.items())


def replace_section(text: str, block: str, heading: str = "## Quality: ADPM vs long-tail baselines") -> str:
    """``text`` with everything between the quality markers replaced by ``block`` (markers kept);
    without markers, the heading, markers and block are appended."""
    section = f"{BEGIN}\n{block.strip()}\n{END}"
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: section, text, count=1)
    return text.rstrip() + f"\n\n{heading}\n\n{section}\n"
