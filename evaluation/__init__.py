"""Evaluation: methods on benchmarks, per-problem records, a table and plots (no Prefect, no MLflow).

``evaluate_suite`` is the entry point the CLI, the stages and the flows share.
"""

from evaluation.benchmarks import load_suite
from evaluation.methods import Method, parse_method, parse_methods
from evaluation.records import flat_metrics, summarize
from evaluation.report import format_table, plot_accuracy_vs_tokens, plot_rounds
from evaluation.run import evaluate, evaluate_suite

__all__ = [
    "Method", "evaluate", "evaluate_suite", "flat_metrics", "format_table", "load_suite", "parse_method",
    "parse_methods", "plot_accuracy_vs_tokens", "plot_rounds", "summarize",
]
