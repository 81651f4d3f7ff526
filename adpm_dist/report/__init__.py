"""Run reports, comparison tables and the reverse-chain t-SNE (``python -m adpm_dist.report``)."""
from .compare import collect_methods, compare, find_runs
from .run_data import RunData, load_metrics, load_run
from .run_report import run_summary, write_report


def write_report_or_warn(run_dir, print_fn=print) -> None:
    """report.md after a run: a plotting failure must never cost a finished run its results."""
    try:
        print_fn(f"wrote {write_report(run_dir)}")
    except Exception as e:  # noqa: BLE001
        print_fn(f"warning: report.md not written ({type(e).__name__}: {e}); "
                 f"retry with `python -m adpm_dist.report show {run_dir}`")


__all__ = ["write_report", "write_report_or_warn", "run_summary", "compare", "collect_methods", "find_runs", "RunData", "load_run",
           "load_metrics"]
