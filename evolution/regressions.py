"""Did a round fall back, and what did its loop produce beside the round before's?

The bar (issue 15): no round more than its interval below the round before. A round regresses on a
benchmark when the 95% interval of its greedy accuracy lies wholly below the previous round's
accuracy. Its summary then says so, next to the numbers that tell two rounds' data apart: problems
solved, SFT examples, their length, the share of distinct solutions and of examples right only
through a wrong step. These are the facts a reader needs to find the cause; they do not name it.
"""

from __future__ import annotations

from collections.abc import Mapping

from evolution.stages import PRODUCED, recorded_round
from evomath.config import ExperimentConfig


def regressed(before: Mapping, after: Mapping) -> bool:
    """Is ``after`` (an accuracy with ``accuracy_high``) more than its interval below ``before``?"""
    return after["accuracy_high"] < before["accuracy"]


def _percent(row: Mapping) -> str:
    return f"{100 * row['accuracy']:.1f}% [{100 * row['accuracy_low']:.1f}, {100 * row['accuracy_high']:.1f}]"


def _value(value) -> str:
    return "-" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def regressions(previous: Mapping, current: Mapping) -> list[str]:
    """One line per benchmark whose greedy accuracy regressed from ``previous`` to ``current``
    (``recorded_round`` items), then one line comparing what the two rounds' loops produced; empty
    when nothing regressed."""
    def greedy(item: Mapping) -> dict[str, Mapping]:
        return {r["benchmark"]: r for r in item["summary"] if r["method"] == "greedy" and "accuracy_high" in r}

    before, k = greedy(previous), current["round"]
    lines = [f"{benchmark}: greedy {_percent(before[benchmark])} in round {previous['round']} -> {_percent(row)} in "
             f"round {k}, more than its 95% interval below"
             for benchmark, row in greedy(current).items() if benchmark in before and regressed(before[benchmark], row)]
    if lines:
        produced = ", ".join(f"{metric} {_value(previous['produced'].get(metric))} -> "
                             f"{_value(current['produced'].get(metric))}" for _, metric in PRODUCED)
        lines.append(f"what the loop produced, round {previous['round']} -> {k}: {produced}")
    return lines


def round_regressions(config: ExperimentConfig, k: int) -> list[str]:
    """``regressions`` of round k against round k - 1, read from the run directory."""
    return regressions(recorded_round(config, k - 1), recorded_round(config, k)) if k >= 1 else []
