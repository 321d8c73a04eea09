"""A whole round through the real stages on the embedded model: search, data, SFT, PPM, evaluation;
then the same round again, which must reuse every stage from its records."""

import json
import time
from pathlib import Path

import pytest

from evolution import stages
from evomath.config import load_config
from evomath.files import read_jsonl
from evomath.tree import read_trees

pytestmark = pytest.mark.slow
TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def finished_round(tmp_path_factory):
    config = load_config(TINY).model_copy(update={"run_dir": tmp_path_factory.mktemp("runs"), "rounds": 1})
    ctx = stages.round_context(config, 1)
    results = stages.run_round(ctx)
    return ctx, results


def test_every_stage_leaves_its_record_and_artifacts(finished_round):
    ctx, results = finished_round
    assert list(results) == stages.STAGES
    for stage in stages.STAGES:
        record = json.loads(ctx.path(f"stage-{stage}.json").read_text())
        assert record["key"] == stages.stage_key(ctx, stage)
    trees = list(read_trees(ctx.path("trees-final.jsonl")))
    assert len(trees) == ctx.config.data.limit == results["bucket"]["problems"]
    assert sum(results["bucket"][b] for b in ("easy", "medium", "hard")) == len(trees)
    assert results["select_sft"]["sft_examples"] == len(list(read_jsonl(ctx.path("sft.jsonl"))))
    assert results["reward_data"]["pairs"] == len(list(read_jsonl(ctx.path("pairs.jsonl"))))
    policy, ppm = stages.round_models(ctx)
    assert (Path(policy) == ctx.path("policy")) == bool(results["train_policy"]["policy_trained"])
    assert (ppm is not None and Path(ppm) == ctx.path("ppm")) == bool(results["train_reward"]["ppm_trained"])
    assert 0.0 <= results["evaluate"]["demo_test/greedy/accuracy"] <= 1.0
    assert ctx.path("eval/summary.json").is_file()


def test_rerun_reuses_every_stage(finished_round):
    ctx, results = finished_round
    start = time.perf_counter()
    again = stages.run_round(stages.round_context(ctx.config, 1))
    assert time.perf_counter() - start < 10  # no engine, no training: records only
    assert again == json.loads(json.dumps(results))


def test_next_round_starts_from_this_rounds_models(finished_round):
    ctx, _ = finished_round
    policy, ppm = stages.round_models(ctx)
    following = stages.round_context(ctx.config, 2)
    assert (following.policy, following.ppm) == (policy, ppm)


@pytest.mark.parametrize("kind", ["pqm", "value"])
def test_a_round_trains_the_reward_model_its_config_names(kind, tmp_path):
    """reward_model chooses what the round learns from its trees and trains: a PQM on step Q (the
    PRM shares this path with its own labels), or AlphaMath's value head jointly with the policy."""
    from evomath.scoring import reward_marker

    config = load_config(TINY).model_copy(update={"run_dir": tmp_path, "rounds": 1, "reward_model": kind})
    ctx = stages.round_context(config, 1)
    results = stages.run_round(ctx)
    assert results["reward_data"]["labelled_steps"] == sum(
        len(r["steps"]) for r in read_jsonl(ctx.path(stages.STEP_LABELS)))
    assert results["reward_data"]["labelled_steps"] > 0 and results["train_policy"]["policy_trained"]
    policy, reward = stages.round_models(ctx)
    assert reward_marker(reward, kind)["kind"] == kind
    assert stages.round_context(config, 2).ppm == reward  # it guides the next round's search
    if kind == "value":
        assert reward == policy  # the value head lives on the policy
        assert (Path(policy) / "value_head" / "head.safetensors").is_file()
