"""One thin Prefect task per round stage of ``evolution.stages``.

A task's cache key is the stage layer's own key (the stage, the config, the round's models and the
SHA-256 of the stage's input files) and its result is persisted as JSON under the run dir, so a
re-run round shows finished stages as Cached and a killed one resumes inside the stage
(generation keeps every finished tree in trees.jsonl). The files are the truth: a stage whose
record file is gone is run again even if Prefect still holds a result for its key.

Each task runs as a nested MLflow run of the round and posts what the stage made to it.
"""

from __future__ import annotations

import re
from pathlib import Path

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from evolution import stages
from evolution.stages import RoundContext
from evomath.config import ExperimentConfig
from tasks.tracking import Tracker


def results_dir(config: ExperimentConfig) -> Path:
    return stages.experiment_dir(config).resolve() / "prefect-results"


def _cache_key(context, parameters) -> str:
    return stages.stage_key(parameters["ctx"], context.task.name)


def _run(stage: str, ctx: RoundContext, parent_run_id: str | None, **kwargs) -> dict:
    """The stage through the stage layer, as a nested MLflow run of the round."""
    tracker = Tracker.for_config(ctx.config)
    key = f"{parent_run_id or ctx.dir.resolve()}/{stage}"
    with tracker.run(stage, key=key, parent=parent_run_id, tags={"stage": stage, "round": str(ctx.round)}) as run_id:
        metrics = stages.run_stage(ctx, stage, **kwargs)
        tracker.log_stage(run_id, stage, metrics)
    return metrics


def artifact_key(config: ExperimentConfig, *parts) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(str(p) for p in (config.name, *parts)).lower()).strip("-")


class ProgressArtifact:
    """A Prefect progress artifact fed by a stage's ``on_progress(done, total)``."""

    def __init__(self, key: str, description: str):
        self.id = create_progress_artifact(0.0, key=key, description=description)

    def __call__(self, done: int, total: int) -> None:
        update_progress_artifact(self.id, 100.0 * done / max(total, 1))


def _stage_task(stage: stages.Stage):
    """The Prefect task of a registry stage: the stage layer's key and records, a nested MLflow
    run, and a progress artifact for a stage that counts its work."""

    def run(ctx: RoundContext, parent_run_id: str | None = None, **kwargs) -> dict:
        if stage.progress:
            kwargs["on_progress"] = ProgressArtifact(artifact_key(ctx.config, "round", ctx.round, stage.progress),
                                                     f"{stage.progress}: {stage.name} in round {ctx.round}")
        return _run(stage.name, ctx, parent_run_id, **kwargs)

    run.__name__ = run.__qualname__ = stage.name
    run.__doc__ = stage.run.__doc__
    return task(run, name=stage.name, cache_key_fn=_cache_key, persist_result=True, result_serializer="json",
                task_run_name=f"{stage.name}-round-{{ctx.round}}")


STAGE_TASKS = {name: _stage_task(stage) for name, stage in stages.REGISTRY.items()}


def run_stage(stage: str, ctx: RoundContext, parent_run_id: str | None = None, **kwargs) -> dict:
    """Call a stage's task with its result storage under the run dir; rerun it if its record is gone."""
    stage_task = STAGE_TASKS[stage].with_options(
        result_storage=results_dir(ctx.config), refresh_cache=stages.finished_stage(ctx, stage) is None
    )
    return stage_task(ctx, parent_run_id, **kwargs)


@task(name="register", task_run_name="register-round-{ctx.round}")
def register(ctx: RoundContext, run_id: str, score: float) -> dict[str, str]:
    """The round's policy (after RL when the reinforce stage ran) and PPM as model versions aliased
    round-k (and champion when best so far)."""
    ppm, rl_policy = ctx.path(stages.PPM), ctx.path(stages.POLICY_RL)
    policy = rl_policy if rl_policy.is_dir() else ctx.path(stages.POLICY)
    return Tracker.for_config(ctx.config).register_round_models(
        run_id, ctx.round, policy, ppm if ppm.is_dir() else None, score
    )
