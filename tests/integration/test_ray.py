"""MCTS shards on a local Ray cluster through prefect-ray's task runner (the ``ray`` extra).

Two shards of one problem each on a one-CPU local Ray instance (so one engine at a time on this
machine); the merged trees.jsonl holds every problem exactly once, in problem order.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from evolution import stages
from evomath.config import load_config
from evomath.files import read_jsonl

pytest.importorskip("prefect_ray", reason="the ray extra (prefect-ray, ray) is not installed")
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_mcts_shards_on_ray(tmp_path, monkeypatch, embedded_model_dir):
    from prefect.testing.utilities import prefect_test_harness

    from flows.evolution_round import generate_scaled
    from flows.scale import ScaleOut

    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    config = load_config(REPO / "configs" / "tiny.yaml")
    config = config.model_copy(update={"name": "ray-shards", "run_dir": tmp_path / "runs",
                                       "data": config.data.model_copy(update={"limit": 2})})
    ctx = stages.round_context(config, 1)
    with prefect_test_harness(server_startup_timeout=120):
        generate_scaled(ctx, ScaleOut(shards=2, local_cpus=1))

    problems = [p.id for p in stages.training_problems(config)]
    assert [t["problem_id"] for t in read_jsonl(ctx.path("trees.jsonl"))] == problems
    for index in range(2):
        shard = ctx.dir / "shards" / f"{index}-of-2"
        assert [t["problem_id"] for t in read_jsonl(shard / "trees.jsonl")] == problems[index::2]
        assert (shard / "stage-generate.json").exists()
