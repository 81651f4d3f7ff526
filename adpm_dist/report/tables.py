"""Markdown table helpers shared by the run report and the comparison tables."""
from __future__ import annotations

import math
from collections.abc import Sequence

from ..evaluate import format_mean_std


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table; n/a for missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def mean_std(values: Sequence[float], digits: int = 3) -> str:
    """'mean ± std' (sample std) over folds/runs: evaluate.format_mean_std, "n/a" for none."""
    return format_mean_std(values, digits)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align_first_left: bool = True) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |"]
    rule = [(":" + "-" * (w - 1)) if (i == 0 and align_first_left) else ("-" * (w - 1) + ":")
            for i, w in enumerate(widths)]
    lines.append("| " + " | ".join(rule) + " |")
    lines += ["| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
              + " |" for r in cells[1:]]
    return "\n".join(lines)
