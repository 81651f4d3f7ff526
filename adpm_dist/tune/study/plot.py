"""leaderboard.png: candidates by rank, each estimate with its interval and the chance level (left), the
paired difference to the leader with the equivalence band (right), the cost per trial in the labels."""
from __future__ import annotations

import io
import math
from pathlib import Path

from ...files import atomic_write_bytes
from .answer import Answer

COLOURS = {"leader": "tab:green", "equal": "tab:blue", "undecided": "tab:orange", "clearly worse": "tab:gray",
           "incomplete": "lightgray"}


def write_plot(path: Path, a: Answer, rows: list[dict]) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend

    shown = [r for r in rows if not math.isnan(r["estimate"])]
    fig = Figure(figsize=(9, 1.4 + 0.45 * max(1, len(shown))), dpi=120)
    left, right = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    y = list(range(len(shown)))[::-1]  # rank 1 at the top
    for yi, r in zip(y, shown):
        colour = "tab:red" if r["recommended"] else COLOURS.get(r["verdict"], "lightgray")
        left.errorbar(r["estimate"], yi, xerr=[[r["estimate"] - r["estimate_low"]], [r["estimate_high"] - r["estimate"]]],
                      fmt="o", color=colour, capsize=3)
        d = a.decisions[r["candidate"]]
        if d.verdict != "leader" and not math.isnan(d.diff):
            right.errorbar(d.diff, yi, xerr=[[d.diff - d.diff_low], [d.diff_high - d.diff]], fmt="o", color=colour, capsize=3)
        else:
            right.plot(0, yi, "*", color=colour, markersize=10)
    left.axvline(a.chance, color="black", linestyle=":", linewidth=1, label=f"chance {a.chance:.3f}")
    right.axvspan(-a.eps, a.eps, color="tab:green", alpha=0.15, label=f"equivalence ±{a.eps:g}")
    right.axvline(0, color="black", linewidth=0.8)
    left.set_yticks(y, [f"{r['rank']}. {r['candidate']}\n{r['cost_per_trial_h'] * 60:.1f} CPU/GPU-min/trial" for r in shown],
                    fontsize=8)
    left.set_xlabel(f"macro-F1, target prior {a.target} (95% interval)", fontsize=8)
    right.set_xlabel("difference to the leader (95% interval)", fontsize=8)
    left.legend(fontsize=7, loc="best")
    right.legend(fontsize=7, loc="best")
    fig.suptitle(f"study on {a.search['dataset']}: red = recommended, green = leader, blue = equal, "
                 "orange = undecided, grey = clearly worse", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
