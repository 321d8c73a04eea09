"""Self-evolution: the starting policy's evaluation (round 0, the baseline), then rounds 1..N of
the round flow, round k starting from round k-1's models.

The evolution is the parent MLflow run (params, metrics by round, and a plot of accuracy, bucket
counts and minutes per stage by round, also saved as ``rounds.png``); each round is a nested run
and a subflow. Re-running a killed evolution with the same config continues its MLflow run and
skips every finished stage.
"""

from __future__ import annotations

from prefect import flow

from evaluation.report import plot_rounds
from evolution import stages
from evomath.config import ExperimentConfig
from flows.evolution_round import config_hash, evolution_round
from flows.scale import ScaleOut
from tasks import reports
from tasks import stages as stage_tasks
from tasks.tracking import Tracker

TABLE_FILE = "evolution.json"
PLOT_FILE = "rounds.png"


@flow(name="self-evolution", log_prints=True)
def self_evolution(
    config: ExperimentConfig = ExperimentConfig(),
    rounds: int | None = None,
    scale: ScaleOut = ScaleOut(),
) -> list[dict]:
    """``rounds`` rounds (default ``config.rounds``, 4 like rStar-Math) of ``config``; returns one row per
    round, round 0 being the starting policy."""
    print(stages.check_plan(config).table())  # refuse, before any work, a config this machine cannot hold
    tracker = Tracker.for_config(config)
    directory = stages.experiment_dir(config)
    key = f"evolution:{directory.resolve()}:{config_hash(config)}"
    with tracker.run("evolution", key=key, reuse_finished=False, tags={"kind": "evolution"}) as run_id:
        tracker.log_config(run_id, config)
        base = stages.base_context(config)
        metrics = stage_tasks.run_stage("evaluate", base, run_id, policy=config.policy)
        rows = [reports.round_row(base, {"evaluate": metrics})]
        tracker.log_metrics(run_id, rows[0], step=0)
        for k in range(1, (rounds or config.rounds) + 1):
            row = evolution_round(config, k, scale=scale, parent_run_id=run_id)
            tracker.log_metrics(run_id, row, step=k)
            rows.append(row)
        plot = plot_rounds([stages.recorded_round(config, k) for k in range(len(rows))], directory / PLOT_FILE)
        tracker.log_rounds(run_id, rows, plot)
        reports.write_rows(directory / TABLE_FILE, rows)
        reports.post_evolution_report(config, rows, run_id, tracker.run_url(run_id), tracker.uri)
    return rows
