"""Per-problem evaluation records and the per-method table they sum up to.

A record is one method's outcome on one problem: the chosen answer, whether it is right, and what
it cost. Seconds come from the batched run's wall time divided by its problems (problems are
generated together, so a per-question time only exists as an average); tokens are generated
tokens. The table has AlphaMath's columns (accuracy, seconds per question, average steps, number
of solutions) plus the accuracy's 95% Wilson interval, tokens per question and pass@k (some
candidate solution is right).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from evaluation.select import Choice
from evaluation.stats import accuracy_interval
from evomath.files import read_jsonl, write_json, write_jsonl

COLUMNS = (
    "benchmark", "method", "problems", "accuracy", "accuracy_low", "accuracy_high", "seconds_per_question",
    "avg_steps", "avg_solutions", "tokens_per_question", "pass_at_k",
)


def make_record(benchmark: str, method: str, problem, choice: Choice, tokens: int, seconds: float) -> dict:
    chosen = choice.selected
    return {
        "benchmark": benchmark,
        "method": method,
        "problem_id": problem.id,
        "gold": problem.answer,
        "answer": chosen.answer if chosen else None,
        "correct": bool(chosen and chosen.correct),
        "any_correct": choice.any_correct,
        "solutions": len(choice.candidates),
        "steps": round(choice.mean_steps, 3),
        "tokens": tokens,
        "seconds": round(seconds, 6),
    }


def records_path(out_dir: str | Path, benchmark: str, method: str) -> Path:
    """Where one benchmark's records of one method lie under an evaluation's ``out_dir``."""
    return Path(out_dir) / benchmark / f"{method}.jsonl"


def read_verdicts(out_dir: str | Path, benchmark: str, method: str) -> dict[str, bool]:
    """Problem id -> whether the method's answer was right, from the records under ``out_dir``;
    empty where that benchmark and method were not evaluated."""
    path = records_path(out_dir, benchmark, method)
    return {r["problem_id"]: bool(r["correct"]) for r in read_jsonl(path)} if path.exists() else {}


def write_records(out_dir: str | Path, records: Sequence[dict]) -> list[Path]:
    """``<out_dir>/<benchmark>/<method>.jsonl``, one file per benchmark and method."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["benchmark"], r["method"]), []).append(r)
    paths = []
    for (benchmark, method), rows in groups.items():
        path = records_path(out_dir, benchmark, method)
        write_jsonl(path, rows)
        paths.append(path)
    return paths


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarize(records: Iterable[dict]) -> list[dict]:
    """One row per (benchmark, method), in the order they first appear."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["benchmark"], r["method"]), []).append(r)
    rows = []
    for (benchmark, method), rs in groups.items():
        interval = accuracy_interval([r["correct"] for r in rs])
        rows.append({
            "benchmark": benchmark,
            "method": method,
            "problems": len(rs),
            "accuracy": interval.estimate,
            "accuracy_low": interval.low,
            "accuracy_high": interval.high,
            "seconds_per_question": _mean([r["seconds"] for r in rs]),
            "avg_steps": _mean([r["steps"] for r in rs]),
            "avg_solutions": _mean([r["solutions"] for r in rs]),
            "tokens_per_question": _mean([r["tokens"] for r in rs]),
            "pass_at_k": _mean([float(r["any_correct"]) for r in rs]),
        })
    return rows


def write_summary(path: str | Path, rows: Sequence[dict]) -> Path:
    return write_json(path, list(rows))


def flat_metrics(rows: Sequence[dict]) -> dict[str, float]:
    """``{"<benchmark>/<method>/accuracy": ...}`` for trackers; '@' (not allowed in MLflow
    metric names) is spelled '_at_'."""
    out = {}
    for row in rows:
        prefix = f"{row['benchmark']}/{row['method'].replace('@', '_at_')}"
        for column in COLUMNS[2:]:
            out[f"{prefix}/{column}"] = float(row[column])
    return out
