"""The stage registry is the one description of a round: order, inputs, outputs, headline, tasks."""

from __future__ import annotations

from evolution import stages


def test_every_stage_reads_only_what_earlier_stages_write():
    written: set[str] = set()
    for stage in stages.REGISTRY.values():
        assert set(stage.inputs) <= written, f"{stage.name} reads {set(stage.inputs) - written} before it exists"
        written |= set(stage.outputs)
    assert stages.STAGES == ["generate", "extra_rollouts", "bucket", "select_sft", "reward_data", "train_policy",
                             "train_reward", "reinforce", "evaluate"]


def test_tasks_and_the_headline_are_derived_from_the_registry():
    from tasks import reports
    from tasks import stages as stage_tasks

    assert list(stage_tasks.STAGE_TASKS) == stages.STAGES
    assert all(task.name == name for name, task in stage_tasks.STAGE_TASKS.items())
    assert {stage for stage, _ in reports.HEADLINE} <= set(stages.STAGES)
    assert reports.HEADLINE[("train_reward", "heldout_accuracy")] == "pair_accuracy"
    assert stages.REGISTRY["generate"].progress == "generation"


def test_a_sharded_policy_is_hashed_by_its_shards(tmp_path):
    """The key used to hash policy/model.safetensors only, so a sharded policy hashed as missing."""
    import json

    from evomath.config import ExperimentConfig

    ctx = stages.round_context(ExperimentConfig(name="keys", run_dir=tmp_path), 1, policy="p")
    policy = ctx.path(stages.POLICY)
    policy.mkdir()
    (policy / "config.json").write_text("{}")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (policy / "model.safetensors.index.json").write_text(json.dumps(index))
    for name in index["weight_map"].values():
        (policy / name).write_bytes(b"\0" * 8)
    key = stages.stage_key(ctx, "evaluate")
    (policy / "model-00002-of-00002.safetensors").write_bytes(b"\1" * 8)
    assert stages.stage_key(ctx, "evaluate") != key


def test_the_round_report_says_where_the_time_went():
    from tasks import reports

    results = {"generate": {"stage_seconds": 12.34, "seconds_startup": 3.0, "seconds_generate": 8.0,
                            "seconds_code": 0.5, "seconds_grading": 0.2, "seconds_scoring": 0.0, "problems": 40},
               "train_policy": {"stage_seconds": 60.0, "steps": 8}}
    assert reports.time_rows(results) == [
        {"stage": "generate", "seconds": 12.3, "startup": 3.0, "generate": 8.0, "code": 0.5, "grading": 0.2,
         "scoring": 0.0},
        {"stage": "train_policy", "seconds": 60.0}]
