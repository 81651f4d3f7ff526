"""Run reports, comparison tables and the reverse-chain t-SNE (``python -m adpm_dist.report``)."""
from .compare import collect_methods, compare, find_runs
from .run_data import RunData, load_metrics, load_run
from .run_report import run_summary, write_report

__all__ = ["write_report", "run_summary", "compare", "collect_methods", "find_runs", "RunData", "load_run",
           "load_metrics"]
