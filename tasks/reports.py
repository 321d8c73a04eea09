"""What a round and an evolution post to the Prefect UI: the headline table and a markdown report.

A round's headline is one flat row (bucket counts, data sizes, losses, accuracies, its score), the
same row the MLflow round run carries as metrics and the evolution table stacks by round.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from evolution import stages
from evolution.stages import RoundContext
from evomath.config import ExperimentConfig
from evomath.files import write_json
from tasks.stages import artifact_key

HEADLINE = {(name, metric): column for name, stage in stages.REGISTRY.items() for metric, column in stage.headline}


def eval_rows(ctx: RoundContext) -> list[dict]:
    """The round's evaluation summary (benchmark x method rows); empty when it has none."""
    path = ctx.path("eval") / "summary.json"
    return json.loads(path.read_text()) if path.exists() else []


def round_score(rows: Sequence[Mapping]) -> float:
    """The number ``champion`` follows: mean accuracy over the evaluated benchmarks x methods."""
    return sum(r["accuracy"] for r in rows) / len(rows) if rows else 0.0


def interval_text(row: Mapping) -> str:
    """'[4.0, 8.8] of 400': a summary row's 95% interval in percent, and its problems."""
    return f"[{100 * row['accuracy_low']:.1f}, {100 * row['accuracy_high']:.1f}] of {row['problems']}"


def round_row(ctx: RoundContext, results: Mapping[str, Mapping]) -> dict:
    """The round's headline: selected stage metrics, accuracy per benchmark/method with its 95%
    interval, score, seconds."""
    row: dict = {"round": ctx.round}
    for (stage, metric), column in HEADLINE.items():
        value = results.get(stage, {}).get(metric)
        if isinstance(value, (int, float)):
            row[column] = value
    evaluated = eval_rows(ctx)
    for r in evaluated:
        row[f"{r['benchmark']}/{r['method']}"] = r["accuracy"]
        if "accuracy_low" in r:  # text, so the table shows it and MLflow (numbers only, per stage) skips it
            row[f"{r['benchmark']}/{r['method']} 95%"] = interval_text(r)
    row["score"] = round_score(evaluated)
    row["seconds"] = sum(r.get("stage_seconds", 0.0) for r in results.values())
    return row


TIME_PARTS = ("seconds_startup", "seconds_generate", "seconds_code", "seconds_grading", "seconds_scoring")


def time_rows(results: Mapping[str, Mapping]) -> list[dict]:
    """Where the round's time went: one row per stage, its seconds, and for the searching stages
    the engine and pools' start-up, generation, sandbox waits, grading and value scoring."""
    rows = []
    for stage, metrics in results.items():
        row = {"stage": stage, "seconds": round(metrics.get("stage_seconds", 0.0), 1)}
        row |= {part.removeprefix("seconds_"): round(metrics[part], 1) for part in TIME_PARTS if part in metrics}
        rows.append(row)
    return rows


def format_value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _markdown_table(rows: Sequence[Mapping]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_value(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _run_link(run_url: str | None, run_id: str, tracking_uri: str) -> str:
    if run_url:
        return f"[MLflow run {run_id}]({run_url})"
    return f"MLflow run `{run_id}` in `{tracking_uri}` (start `evomath up` for a UI)"


def post_round_report(ctx: RoundContext, row: Mapping, versions: Mapping[str, str], run_id: str,
                      run_url: str | None, tracking_uri: str, times: Sequence[Mapping] = (),
                      regressions: Sequence[str] = ()) -> None:
    """The round's summary table and a markdown report linking its MLflow run (and, given
    ``time_rows``, where its time went; given ``evolution.regressions`` lines, that it fell back
    and what its loop produced beside the round before's)."""
    create_table_artifact(
        [{"metric": k, "value": format_value(v)} for k, v in row.items()],
        key=artifact_key(ctx.config, "round", ctx.round, "summary"),
        description=f"Round {ctx.round} of {ctx.config.name}: buckets, data sizes, losses, accuracies",
    )
    models = ", ".join(f"{kind} `models:/{kind}/{v}` (alias `round-{ctx.round}`)" for kind, v in versions.items())
    markdown = "\n\n".join([
        f"# Round {ctx.round} of {ctx.config.name}",
        _run_link(run_url, run_id, tracking_uri),
        f"Generated with `{ctx.policy}`" + (f", PPM `{ctx.ppm}`" if ctx.ppm else "") + f"; files in `{ctx.dir}`.",
        f"Registered: {models or 'nothing'}.",
        *(["## Regressed", "\n".join(f"- {line}" for line in regressions)] if regressions else []),
        _markdown_table([row]),
        *(["## Where the time went (seconds)", _markdown_table(times)] if times else []),
    ])
    create_markdown_artifact(markdown, key=artifact_key(ctx.config, "round", ctx.round, "report"),
                             description=f"Round {ctx.round} report")


def post_evolution_report(config: ExperimentConfig, rows: Sequence[Mapping], run_id: str, run_url: str | None,
                          tracking_uri: str) -> None:
    create_table_artifact(list(rows), key=artifact_key(config, "evolution"),
                          description=f"{config.name}: one row per round")
    markdown = "\n\n".join([f"# Self-evolution of {config.name}", _run_link(run_url, run_id, tracking_uri),
                            _markdown_table(rows)])
    create_markdown_artifact(markdown, key=artifact_key(config, "evolution", "report"),
                             description="Self-evolution report")


def write_rows(path: Path, rows: Sequence[Mapping]) -> Path:
    """The evolution table as a file (``evomath demo`` prints it when the run is done)."""
    return write_json(path, list(rows))
