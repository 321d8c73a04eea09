"""One round of self-evolution as a Prefect flow: generate, extra rollouts for hard problems, bucket,
select SFT data, build PPM pairs, train the policy, train the PPM, evaluate, register.

Every stage is a cached task (tasks/stages.py), so re-running a killed or finished round goes on
from where it stopped. The round is an MLflow run, nested in the evolution's when it has one.
"""

from __future__ import annotations

import hashlib

from prefect import flow

from evolution import stages
from evolution.regressions import round_regressions
from evolution.stages import STAGES, RoundContext
from evomath import engines
from evomath.config import ExperimentConfig
from flows.scale import ScaleOut
from tasks import reports
from tasks import stages as stage_tasks
from tasks.shards import generate_shard, merge_shards
from tasks.tracking import Tracker, pin


def config_hash(config: ExperimentConfig) -> str:
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:12]


@flow(name="generate-shards", log_prints=True)
def generate_shards(ctx: RoundContext, shards: int) -> int:
    """MCTS shards of the round on the flow's task runner (Ray when scaled out), merged into trees.jsonl."""
    futures = generate_shard.map(ctx, range(shards), shards)
    return merge_shards(ctx, [f.result() for f in futures])


def generate_scaled(ctx: RoundContext, scale: ScaleOut) -> None:
    with scale.remote_options():
        generate_shards.with_options(task_runner=scale.task_runner())(ctx, scale.shards)


@flow(name="evolution-round", log_prints=True)
def evolution_round(
    config: ExperimentConfig = ExperimentConfig(),
    round: int = 1,
    policy: str | None = None,
    ppm: str | None = None,
    scale: ScaleOut = ScaleOut(),
    parent_run_id: str | None = None,
) -> dict:
    """Round ``round`` of ``config``. ``policy``/``ppm``: a path, model name or MLflow URI
    (``models:/policy@champion``); empty means round k-1's models (round 1: ``config.policy``).
    ``parent_run_id``: the evolution's MLflow run (set by self-evolution)."""
    stages.check_plan(config)  # refuse, before any work, a config this machine cannot hold
    tracker = Tracker.for_config(config)
    ctx = stages.round_context(config, round, pin(policy) if policy else None, pin(ppm) if ppm else None)
    key = f"round:{ctx.dir.resolve()}:{config_hash(config)}:{parent_run_id or 'standalone'}"
    with tracker.run(f"round-{round}", key=key, parent=parent_run_id, tags={"round": str(round)}) as run_id:
        tracker.log_config(run_id, config, round=round, policy=ctx.policy, ppm=ctx.ppm)
        if scale.shards > 1 and stages.finished_stage(ctx, "generate") is None:
            generate_scaled(ctx, scale)
        results = {stage: stage_tasks.run_stage(stage, ctx, run_id) for stage in STAGES}
        engines.release()
        row = reports.round_row(ctx, results)
        tracker.log_metrics(run_id, row)
        versions = stage_tasks.register(ctx, run_id, row["score"])
        fell_back = round_regressions(config, round)
        reports.post_round_report(ctx, row, versions, run_id, tracker.run_url(run_id), tracker.uri,
                                  reports.time_rows(results), fell_back)
    print(f"round {round}: " + ", ".join(f"{k}={reports.format_value(v)}" for k, v in row.items()))
    for line in fell_back:
        print(f"round {round} regressed: {line}")
    return row
