"""The Prefect flows against a real Prefect server (prefect_test_harness) and a real MLflow SQLite store.

``test_self_evolution_*`` run two rounds over a fake stage layer (files and metrics like the real
one's, in seconds), to check orchestration and tracking: nested MLflow runs, params, metrics, data
sets, plots, registered versions with their aliases, Prefect artifacts, and caching on a re-run.
``test_generation_resumes_after_crash`` runs real MCTS through the generate task on a tiny config:
it dies during generation and is run again, and no tree may be lost or duplicated.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from evolution import stages
from evomath.config import ExperimentConfig, load_config
from evomath.files import read_jsonl, write_jsonl
from evomath.tree import Node, Tree, append_trees, read_trees, write_trees

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """A temporary Prefect server and a fresh MLflow store for this module."""
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("flows-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        with prefect_test_harness(server_startup_timeout=120):
            yield home


# ---------------------------------------------------------------- a fake stage layer


def _tree(problem_id: str, correct: int, wrong: int) -> Tree:
    nodes = [Node(0, None, "", 0, visits=correct + wrong, value_sum=correct - wrong)]
    for i in range(correct + wrong):
        ok = i < correct
        nodes.append(Node(i + 1, 0, f"step {i}", 1, visits=1, value_sum=1.0 if ok else -1.0, terminal="answer",
                          answer="1" if ok else "2", correct=ok))
        nodes[0].children.append(i + 1)
    return Tree(problem_id, f"question {problem_id}", "1", nodes=nodes)


def _fake_stages(scores: dict[int, float], calls: list[str]):
    """Stage functions with the real ones' signatures, files and metric names."""

    def generate(ctx, on_progress=None):
        calls.append(f"generate-{ctx.round}")
        for i in range(3):
            append_trees(ctx.path("trees.jsonl"), [_tree(f"p{i}", correct=i, wrong=2 - i + 1)])
            if on_progress:
                on_progress(i + 1, 3)
        return {"problems": 3, "solve_rate": 2 / 3, "generated_tokens": 300, "artifacts": {"trees": str(ctx.path("trees.jsonl"))}}

    def extra_rollouts(ctx, on_progress=None):
        write_trees(ctx.path("trees-final.jsonl"), read_trees(ctx.path("trees.jsonl")))
        return {"hard_before": 1, "hard_after": 1, "rescued": 0, "artifacts": {"trees_final": str(ctx.path("trees-final.jsonl"))}}

    def bucket(ctx):
        write_jsonl(ctx.path("buckets.jsonl"), [{"problem_id": "p0", "bucket": "hard"}])
        return {"easy": 0, "medium": 2, "hard": 1, "problems": 3, "artifacts": {"buckets": str(ctx.path("buckets.jsonl"))}}

    def select_sft(ctx):
        write_jsonl(ctx.path("sft.jsonl"), [{"prompt": "q", "completion": "a", "problem_id": "p1", "avg_q": 0.5}])
        return {"sft_examples": 1, "sft_problems": 1, "artifacts": {"sft": str(ctx.path("sft.jsonl"))}}

    def reward_data(ctx):
        write_jsonl(ctx.path("pairs.jsonl"), [{"prompt": "q", "chosen": "a", "rejected": "b", "depth": 1}])
        return {"pairs": 1, "pair_problems": 1, "artifacts": {"pairs": str(ctx.path("pairs.jsonl"))}}

    def _model(directory: Path, tag: str) -> Path:
        directory.mkdir(exist_ok=True)
        (directory / "config.json").write_text(json.dumps({"tag": tag}))
        (directory / "model.safetensors").write_text(tag)
        return directory

    def train_policy(ctx):
        _model(ctx.path("policy"), f"policy-{ctx.round}")
        return {"train_loss": 1.0 / ctx.round, "steps": 2, "artifacts": {"policy": str(ctx.path("policy"))}}

    def train_reward(ctx):
        _model(ctx.path("ppm"), f"ppm-{ctx.round}")
        return {"ppm_trained": 1, "train_loss": 0.7, "heldout_accuracy": 0.5, "artifacts": {"ppm": str(ctx.path("ppm"))}}

    def reinforce(ctx):
        return {"rl_trained": 0, "artifacts": {}}

    def evaluate(ctx, policy=None, ppm=None):
        rows = [{"benchmark": "demo_test", "method": m, "problems": 3, "accuracy": scores[ctx.round]}
                for m in ("greedy", "maj@2")]
        (ctx.path("eval")).mkdir(exist_ok=True)
        (ctx.path("eval") / "summary.json").write_text(json.dumps(rows))
        return {"demo_test/greedy/accuracy": scores[ctx.round],
                "artifacts": {"summary": str(ctx.path("eval") / "summary.json"), "records": str(ctx.path("eval"))}}

    return {f.__name__: f for f in (generate, extra_rollouts, bucket, select_sft, reward_data, train_policy,
                                    train_reward, reinforce, evaluate)}


@pytest.fixture
def fake_stages(monkeypatch):
    calls: list[str] = []
    scores = {0: 0.1, 1: 0.5, 2: 0.25, 3: 0.1}  # round 2 is worse: champion must stay on round 1
    fakes = _fake_stages(scores, calls)
    registry = {name: dataclasses.replace(stage, run=fakes[name]) for name, stage in stages.REGISTRY.items()}
    monkeypatch.setattr(stages, "REGISTRY", registry)
    return calls


def _mlflow():
    from mlflow import MlflowClient

    uri = os.environ["MLFLOW_TRACKING_URI"]
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_self_evolution_tracks_and_caches(harness, fake_stages, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, TaskRunFilter, TaskRunFilterName

    from flows.self_evolution import self_evolution

    config = ExperimentConfig(name="fake-evo", run_dir=tmp_path / "runs", rounds=2)
    rows = self_evolution(config)
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[0] == {"round": 0, "demo_test/greedy": 0.1, "demo_test/maj@2": 0.1, "score": 0.1,
                       "seconds": rows[0]["seconds"]}
    assert rows[1]["medium"] == 2 and rows[1]["demo_test/maj@2"] == 0.5 and rows[2]["score"] == 0.25
    assert fake_stages.count("generate-1") == 1 and fake_stages.count("generate-2") == 1

    client = _mlflow()
    experiment = client.get_experiment_by_name("fake-evo")
    runs = client.search_runs([experiment.experiment_id])
    by_id = {r.info.run_id: r for r in runs}
    parent = next(r for r in runs if r.data.tags.get("kind") == "evolution")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    round_runs = [r for r in children if "stage" not in r.data.tags]
    assert sorted(r.info.run_name for r in round_runs) == ["round-1", "round-2"]
    assert [(r.info.run_name, r.data.tags["round"]) for r in children if "stage" in r.data.tags] == [("evaluate", "0")]
    stage_runs = [r for r in runs if by_id.get(r.data.tags.get("mlflow.parentRunId")) in round_runs]
    assert len(stage_runs) == 2 * len(stages.STAGES)
    assert all(r.info.status == "FINISHED" for r in runs)

    # params (the flattened config), metrics by round, data sets, plots
    assert parent.data.params["search.rollouts"] == "16" and parent.data.params["name"] == "fake-evo"
    history = client.get_metric_history(parent.info.run_id, "hard")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 1.0)]
    assert [m.step for m in client.get_metric_history(parent.info.run_id, "score")] == [0, 1, 2]
    round_1 = next(r for r in round_runs if r.info.run_name == "round-1")
    assert round_1.data.metrics["demo_test/maj_at_2"] == 0.5
    assert {"rounds.json", "plots", "config.json"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    generate_run = next(r for r in stage_runs if r.info.run_name == "generate" and r.data.tags["round"] == "1")
    assert generate_run.data.metrics["solve_rate"] == pytest.approx(2 / 3)
    assert {a.path for a in client.list_artifacts(generate_run.info.run_id, "plots")} == {"plots/q-values-trees.png"}
    sft_run = next(r for r in stage_runs if r.info.run_name == "select_sft" and r.data.tags["round"] == "1")
    assert [d.dataset.name for d in client.get_run(sft_run.info.run_id).inputs.dataset_inputs] == ["sft"]

    # the registry: a version per round, round-k aliases, champion on the better round
    for name in ("policy", "ppm"):
        assert str(client.get_model_version_by_alias(name, "round-1").version) == "1"
        assert str(client.get_model_version_by_alias(name, "round-2").version) == "2"
        assert str(client.get_model_version_by_alias(name, "champion").version) == "1"

    with get_client(sync_client=True) as prefect:
        artifacts = prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="fake-evo")))
    kinds = {(a.key, a.type) for a in artifacts}
    assert {("fake-evo-round-1-generation", "progress"), ("fake-evo-round-2-summary", "table"),
            ("fake-evo-round-2-report", "markdown"), ("fake-evo-evolution", "table")} <= kinds
    assert json.loads((tmp_path / "runs" / "fake-evo" / "evolution.json").read_text()) == rows
    assert (tmp_path / "runs" / "fake-evo" / "rounds.png").read_bytes().startswith(b"\x89PNG")
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "plots")} == {"plots/rounds.png"}

    # a re-run with the same config recomputes nothing: every stage task is Cached
    fake_stages.clear()
    assert [r["score"] for r in self_evolution(config)] == [0.1, 0.5, 0.25]
    assert fake_stages == []
    with get_client(sync_client=True) as prefect:
        runs = prefect.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=["train_reward-round-2"])))
    assert sorted(r.state.name for r in runs) == ["Cached", "Completed"]
    assert str(client.get_model_version_by_alias("policy", "champion").version) == "1"


def test_round_from_mlflow_uri(harness, fake_stages, tmp_path):
    """A round's generator given as ``models:/policy@champion`` generates with that version, pinned."""
    from flows.evolution_round import evolution_round
    from tasks.tracking import Tracker

    config = ExperimentConfig(name="fake-uri", run_dir=tmp_path / "runs")
    tracker = Tracker.for_config(config)
    with tracker.run("seed", key="seed") as run_id:
        model = tmp_path / "seed-policy"
        model.mkdir()
        (model / "config.json").write_text("{}")
        tracker.register_round_models(run_id, 0, model, None, score=2.0)  # beats everything: stays champion
    row = evolution_round(config, round=3, policy="models:/policy@champion")
    ctx = stages.round_context(config, 3, policy="x")
    record = json.loads(ctx.path("stage-generate.json").read_text())
    assert record["stage"] == "generate" and row["round"] == 3
    version = _mlflow().get_model_version_by_alias("policy", "champion").version
    runs = _mlflow().search_runs([tracker.experiment_id], filter_string="attributes.run_name = 'round-3'")
    params = runs[0].data.params
    assert params["policy"] == f"models:/policy/{version}"


# ---------------------------------------------------------------- the real stages


class Crash(RuntimeError):
    """Stands in for a kill: raised from inside generation once a tree is on disk."""


def _tiny_config(tmp_path: Path) -> ExperimentConfig:
    """configs/tiny.yaml on three problems."""
    config = load_config(REPO / "configs" / "tiny.yaml")
    return config.model_copy(update={"name": "tiny-resume", "run_dir": tmp_path / "runs",
                                     "data": config.data.model_copy(update={"limit": 3})})


@pytest.fixture
def release_engine():
    """The engine generation started stays cached in this process; give its cores back after the test."""
    from evomath import engines

    yield
    engines.release()


@pytest.mark.slow
def test_generation_resumes_after_crash(harness, tmp_path, monkeypatch, embedded_model_dir, release_engine):
    """Real MCTS through the generate task: it dies after its first tree and is run again. Every
    problem then has exactly one tree, the finished one is kept as it was, the MLflow stage run is
    the same run continued, the progress artifact reaches 100%, and a third run is Cached."""
    from prefect import flow, get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowFilter, FlowFilterName

    from tasks import stages as stage_tasks
    from tasks.stages import ProgressArtifact
    from tasks.tracking import Tracker

    @flow(name="generate-only")
    def generate_only(ctx: stages.RoundContext) -> dict:
        return stage_tasks.run_stage("generate", ctx)

    config = _tiny_config(tmp_path)
    ctx = stages.round_context(config, 1)
    trees_path = ctx.path("trees.jsonl")
    report = ProgressArtifact.__call__

    def crash_after_first_tree(self, done, total):
        report(self, done, total)
        raise Crash(f"{done}/{total} trees")

    monkeypatch.setattr(ProgressArtifact, "__call__", crash_after_first_tree)
    with pytest.raises(Crash):
        generate_only(ctx)
    monkeypatch.undo()
    before = list(read_jsonl(trees_path))
    assert len(before) == 1 and stages.finished_stage(ctx, "generate") is None

    metrics = generate_only(ctx)
    after = list(read_jsonl(trees_path))
    problems = [p.id for p in stages.training_problems(config)]
    assert sorted(t["problem_id"] for t in after) == sorted(problems)
    assert after[0] == before[0], "a finished tree was searched again"
    assert metrics["resumed_problems"] == 1 and metrics["problems"] == len(problems)

    tracker = Tracker.for_config(config)
    [run] = tracker.client.search_runs([tracker.experiment_id], filter_string="attributes.run_name = 'generate'")
    assert run.info.status == "FINISHED" and run.data.metrics["problems"] == len(problems)

    assert generate_only(ctx) == metrics and list(read_jsonl(trees_path)) == after
    with get_client(sync_client=True) as prefect:
        runs = prefect.read_task_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["generate-only"])))
        progress = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["tiny-resume-round-1-generation"])))
    assert sorted(r.state.name for r in runs) == ["Cached", "Completed", "Failed"]
    assert sorted(a.data for a in progress) == [100 / len(problems), 100.0]  # the crashed run's, the resumed one's
