"""Stage bookkeeping that needs no model: what a round leaves on disk, and rounds that train no PPM."""

from __future__ import annotations

import json
from pathlib import Path

from evolution import stages
from evomath.config import ExperimentConfig
from evomath.files import write_json, write_jsonl
from evomath.tree import Tree, append_trees, read_trees


def config(tmp_path, **updates) -> ExperimentConfig:
    return ExperimentConfig(name="unit", run_dir=tmp_path, **updates)


def test_recorded_round_reads_stage_records_and_the_eval_summary(tmp_path):
    cfg = config(tmp_path)
    ctx = stages.round_context(cfg, 1, policy="p")
    write_json(ctx.path("stage-generate.json"), {"stage": "generate", "key": "k",
                                                         "metrics": {"stage_seconds": 90.0}})
    write_json(ctx.path("stage-bucket.json"), {"stage": "bucket", "key": "k",
                                                       "metrics": {"easy": 1, "medium": 2, "hard": 3, "stage_seconds": 0.6}})
    (ctx.path("eval")).mkdir()
    rows = [{"benchmark": "b", "method": "greedy", "accuracy": 0.25}]
    ctx.path("eval/summary.json").write_text(json.dumps(rows))
    item = stages.recorded_round(cfg, 1)
    assert item == {"round": 1, "summary": rows, "buckets": {"easy": 1, "medium": 2, "hard": 3},
                    "minutes": {"generate": 1.5, "bucket": 0.01}}
    assert stages.recorded_round(cfg, 2) == {"round": 2, "summary": [], "buckets": {}, "minutes": {}}


def _fake_model(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (path / "model.safetensors").write_bytes(b"\0" * 8)
    return path


def test_rounds_before_ppm_train_from_round_train_no_ppm(tmp_path, monkeypatch):
    import training.ppm

    calls = []
    monkeypatch.setattr(training.ppm, "train_ppm", lambda *args, **kwargs: calls.append(args) or {"train_loss": 0.5})
    policy = str(_fake_model(tmp_path / "policy"))
    cfg = config(tmp_path, ppm_train_from_round=3)
    pair = {"prompt": "q", "chosen": "a", "rejected": "b", "problem_id": "p", "format": "natural"}
    for k in (2, 3):
        write_jsonl(stages.round_context(cfg, k).path("pairs.jsonl"), [pair, pair])
    early = stages.round_context(cfg, 2, policy=policy)
    assert stages.train_reward(early) == {"ppm_trained": 0, "artifacts": {}}
    assert not calls and not early.path("ppm").exists()
    # the control: from ppm_train_from_round on, the same pairs do reach the trainer
    due = stages.round_context(cfg, 3, policy=policy)
    assert stages.train_reward(due)["ppm_trained"] == 1
    assert [Path(args[0]) for args in calls] == [due.path("pairs.jsonl")]


def _tree(pid: str, key: str | None) -> Tree:
    tree = Tree(pid, f"question {pid}", "7")
    if key is not None:
        tree.meta[stages.GENERATION_KEY] = key
    return tree


def test_the_generation_key_follows_the_search_settings_and_the_models_content(tmp_path):
    policy = _fake_model(tmp_path / "policy")
    cfg = config(tmp_path)
    key = stages.generation_key(stages.round_context(cfg, 1, policy=str(policy)))
    assert key == stages.generation_key(stages.round_context(cfg, 1, policy=str(policy)))
    more = cfg.model_copy(update={"search": cfg.search.model_copy(update={"rollouts": 64})})
    assert stages.generation_key(stages.round_context(more, 1, policy=str(policy))) != key
    other_data = cfg.model_copy(update={"data": cfg.data.model_copy(update={"limit": 3})})
    assert stages.generation_key(stages.round_context(other_data, 1, policy=str(policy))) != key
    (policy / "model.safetensors").write_bytes(b"\1" * 8)  # same path, retrained weights
    assert stages.generation_key(stages.round_context(cfg, 1, policy=str(policy))) != key
    # an evaluation setting does not touch the trees
    evals = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"limit": 7})})
    assert stages.generation_key(stages.round_context(evals, 1, policy=str(policy))) == \
        stages.generation_key(stages.round_context(cfg, 1, policy=str(policy)))


def test_recovery_continues_only_trees_made_under_the_same_key(tmp_path):
    path = tmp_path / "trees.jsonl"
    append_trees(path, [_tree("a", "k1"), _tree("b", "k1")])
    with path.open("a") as fh:
        fh.write('{"problem_id": "c", "torn')  # a crash mid-append
    assert sorted(stages._recover_trees(path, "k1")) == ["a", "b"]
    assert [t.problem_id for t in read_trees(path)] == ["a", "b"]  # the torn line is gone
    # another key (rollouts 2 -> 64, a new policy): start afresh, keep the old file aside
    assert stages._recover_trees(path, "k2") == {}
    assert not path.exists()
    assert [t.problem_id for t in read_trees(tmp_path / "trees.jsonl.stale")] == ["a", "b"]
    append_trees(path, [_tree("a", None)])  # trees from before keys existed are stale too
    assert stages._recover_trees(path, "k2") == {}
    assert (tmp_path / "trees.jsonl.stale.1").exists() and (tmp_path / "trees.jsonl.stale").exists()  # none overwritten


def test_run_directories_are_private(tmp_path):
    """Trees and records carry every gold answer: only the owner may enter the run directory."""
    cfg = config(tmp_path / "fresh" / "runs")
    stages.round_context(cfg, 1)
    stages.base_context(cfg)
    for directory in (tmp_path / "fresh", tmp_path / "fresh" / "runs", stages.experiment_dir(cfg)):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
