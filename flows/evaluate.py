"""Evaluation of a registered (or any) policy and PPM: the configured benchmarks x methods.

``nightly-eval`` runs it on ``models:/policy@champion``. The alias is pinned to its version first,
so a night whose champion has not changed reuses the cached result.
"""

from __future__ import annotations

import re

from prefect import flow
from prefect.artifacts import create_table_artifact

from evolution import stages
from evolution.stages import RoundContext
from evomath import engines
from evomath.config import ExperimentConfig
from tasks import reports
from tasks import stages as stage_tasks
from tasks.stages import artifact_key
from tasks.tracking import Tracker, pin


def _slug(*parts: str | None) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", "+".join(p for p in parts if p)).strip("_")


@flow(name="evaluate", log_prints=True)
def evaluate(
    config: ExperimentConfig = ExperimentConfig(),
    policy: str = "models:/policy@champion",
    ppm: str | None = "models:/ppm@champion",
) -> list[dict]:
    """``config.eval`` (benchmarks x methods) for ``policy`` and ``ppm``: paths, names or MLflow URIs."""
    tracker = Tracker.for_config(config)
    policy, ppm = pin(policy), pin(ppm) if ppm else None
    directory = stages.experiment_dir(config) / "evaluations" / _slug(policy, ppm)
    directory.mkdir(parents=True, exist_ok=True)
    ctx = RoundContext(config=config, round=0, dir=directory, policy=policy, ppm=ppm)
    key = f"evaluate:{directory.resolve()}"
    with tracker.run(f"evaluate {policy}", key=key, tags={"kind": "evaluation"}) as run_id:
        tracker.log_config(run_id, config, policy=policy, ppm=ppm)
        metrics = stage_tasks.run_stage("evaluate", ctx, run_id, policy=policy, ppm=ppm)
        tracker.log_metrics(run_id, metrics)
        engines.release()
    rows = reports.eval_rows(ctx)
    create_table_artifact(rows, key=artifact_key(config, "evaluation"), description=f"{policy} / {ppm}")
    print(f"evaluated {policy} (PPM {ppm}): mean accuracy {reports.round_score(rows):.3f}")
    return rows
