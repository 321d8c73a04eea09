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


def test_the_round_row_carries_what_the_loop_produced_and_each_accuracy_interval(tmp_path):
    import json

    from evomath.config import ExperimentConfig
    from tasks import reports

    ctx = stages.round_context(ExperimentConfig(name="row", run_dir=tmp_path), 1, policy="p")
    ctx.path("eval").mkdir()
    summary = [{"benchmark": "b", "method": "greedy", "problems": 400, "accuracy": 0.06, "accuracy_low": 0.04,
                "accuracy_high": 0.088}]
    ctx.path("eval/summary.json").write_text(json.dumps(summary))
    results = {"bucket": {"easy": 1, "medium": 2, "hard": 3, "solved": 3},
               "select_sft": {"sft_examples": 5, "sft_avg_tokens": 48.5, "sft_distinct_share": 0.8,
                              "sft_wrong_step_share": 0.2, "stage_seconds": 1.0}}
    row = reports.round_row(ctx, results)
    assert row["b/greedy"] == 0.06 and row["b/greedy 95%"] == "[4.0, 8.8] of 400"
    assert {row[k] for k in ("solved", "sft_examples", "sft_avg_tokens", "sft_distinct_share",
                             "sft_wrong_step_share")} == {3, 5, 48.5, 0.8, 0.2}


def test_the_greedy_only_benchmarks_run_in_the_rounds_named(tmp_path, monkeypatch):
    import evaluation.run
    from evomath.config import ExperimentConfig

    seen = []

    def evaluate_models(config, *args, **kwargs):
        seen.append(config.eval.greedy_benchmarks)
        return {}

    monkeypatch.setattr(evaluation.run, "evaluate_models", evaluate_models)
    monkeypatch.setattr(stages, "engine_config", lambda config: config.engine)
    eval_config = {"benchmarks": ["demo_test:1-2"], "greedy_benchmarks": ["demo_phrasing:1-2"], "greedy_rounds": [0, 4]}
    cfg = ExperimentConfig(name="g", run_dir=tmp_path, eval=eval_config)
    for k in (0, 1, 4):
        stages.evaluate(stages.base_context(cfg) if k == 0 else stages.round_context(cfg, k, policy="p"))
    assert seen == [["demo_phrasing:1-2"], [], ["demo_phrasing:1-2"]]
    every = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"greedy_rounds": None})})
    stages.evaluate(stages.round_context(every, 1, policy="p"))
    assert seen[-1] == ["demo_phrasing:1-2"]
