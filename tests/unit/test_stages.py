"""Stage bookkeeping that needs no model: what a round leaves on disk, and rounds that train no PPM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evolution import stages
from evomath.config import ExperimentConfig
from evomath.files import read_jsonl, write_json, write_jsonl
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
    assert item == {"round": 1, "summary": rows, "buckets": {"easy": 1, "medium": 2, "hard": 3}, "produced": {},
                    "minutes": {"generate": 1.5, "bucket": 0.01}}
    assert stages.recorded_round(cfg, 2) == {"round": 2, "summary": [], "buckets": {}, "produced": {}, "minutes": {}}


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


# ---------------------------------------------------------------- generation and extra rollouts without an engine


class SeededBackend:
    """Each completion a function of the request's prompt and seed only, as a seeded engine's would
    be: the first step is a step, later ones a step, a right answer (1 in 10) or a wrong one."""

    def __init__(self):
        self.questions: list[str] = []

    def generate(self, requests, progress=False):
        import random

        from evomath.backends.base import Completion, GenerationResult

        results = []
        for req in requests:
            self.questions.append(req.prompt.split("\n")[0][3:])
            rng = random.Random(f"{req.seed}:{req.prompt}")
            first = req.prompt.count("\n") == 1
            texts = [f"step {rng.randrange(6)}" if (x := rng.random()) < 0.4 or first else
                     "\\boxed{7}" if x < 0.5 else "\\boxed{3}" for _ in range(req.n)]
            results.append(GenerationResult([Completion(t, 3, "stop") for t in texts], len(req.prompt)))
        return results


class ExactGrader:
    def grade_many(self, pairs):
        return [pred == gold for pred, gold in pairs]


class Crash(BaseException):
    """What a fault point raises here instead of killing the test process."""


def fake_round(tmp_path, monkeypatch, name: str, schedule=(2, 3), problems: int = 8):
    """A round context whose search runs on ``SeededBackend`` (no engine, no sandbox)."""
    from contextlib import contextmanager

    from search_fakes import FakeFormat

    from evomath.problems import Problem
    from evomath.search import SearchEnv

    backend = SeededBackend()

    @contextmanager
    def fake_env(ctx):
        yield SearchEnv(backend, FakeFormat(), stages.round_search_config(ctx), None, ExactGrader())

    monkeypatch.setattr(stages, "_search_env", fake_env)
    monkeypatch.setattr(stages, "training_problems",
                        lambda config: [Problem(f"p{i}", f"q{i}", "7") for i in range(problems)])
    policy = tmp_path / "policy"
    if not policy.exists():
        _fake_model(policy)
    cfg = config(tmp_path / name, search={"rollouts": 2, "n_candidates": 2, "max_depth": 3},
                 hard_extra_rollouts={1: list(schedule)})
    return stages.round_context(cfg, 1, policy=str(policy)), backend


def crash_at(monkeypatch, point: str, n: int) -> None:
    hits = []

    def fault_point(name):
        if name == point:
            hits.append(name)
            if len(hits) == n:
                raise Crash(f"{point}:{n}")

    monkeypatch.setattr(stages, "fault_point", fault_point)


def comparable(path: Path) -> list[dict]:
    """Trees as dicts without the wall time their meta records."""
    return [{**t.to_dict(), "meta": {k: v for k, v in t.meta.items() if k != "seconds"}} for t in read_trees(path)]


def record_searches(monkeypatch) -> dict[int, list[str]]:
    """The problems each extra attempt searches, by attempt (from the seed it searches with)."""
    import evomath.search

    searched: dict[int, list[str]] = {}
    real = evomath.search.mcts

    def mcts(problems, env, **kwargs):
        attempt = (env.config.seed - 1000) // 100  # round 1 searches with seed 1000, attempt a with + 100 a
        searched.setdefault(attempt, []).extend(p.id for p in problems)
        return real(problems, env, **kwargs)

    monkeypatch.setattr(evomath.search, "mcts", mcts)
    return searched


@pytest.fixture
def uninterrupted(tmp_path, monkeypatch):
    ctx, _ = fake_round(tmp_path, monkeypatch, "whole")
    stages.generate(ctx)
    searched = record_searches(monkeypatch)
    metrics = stages.extra_rollouts(ctx)
    monkeypatch.undo()
    return ctx, metrics, searched


def test_the_fake_round_has_hard_problems_that_extra_rollouts_rescue_over_two_attempts(uninterrupted):
    ctx, metrics, searched = uninterrupted
    assert metrics["hard_before"] >= 3 and metrics["rescued"] >= 1 and metrics["hard_after"] >= 1, metrics
    seeds = {len(t.meta["seeds"]) for t in read_trees(ctx.path(stages.TREES_FINAL))}
    assert seeds == {1, 2, 3}  # untouched, extended once (then rescued), extended twice
    assert not ctx.path(stages.TREES_EXTRA).exists() and metrics["resumed_trees"] == 0
    assert len(searched[1]) == metrics["hard_before"] > len(searched[2]) == metrics["hard_after"]


def saves_in(ctx) -> int:
    """How many times an uninterrupted extra_rollouts saves a tree (every attempt's hard trees)."""
    return sum(len(t.meta["seeds"]) - 1 for t in read_trees(ctx.path(stages.TREES_FINAL)))


@pytest.mark.parametrize("crash", range(1, 6))
def test_extra_rollouts_resume_after_a_crash_as_if_never_interrupted(uninterrupted, tmp_path, monkeypatch, crash):
    """Killed after the crash-th saved tree, then run again: the trees are the uninterrupted run's,
    and the rerun searches only what no attempt had saved."""
    whole, whole_metrics, whole_searched = uninterrupted
    if crash > saves_in(whole):
        pytest.skip(f"the fake round saves {saves_in(whole)} trees")
    ctx, backend = fake_round(tmp_path, monkeypatch, "crashed")
    stages.generate(ctx)
    assert comparable(ctx.path(stages.TREES)) == comparable(whole.path(stages.TREES))
    crash_at(monkeypatch, "extra_rollouts:tree", crash)
    with pytest.raises(Crash):
        stages.extra_rollouts(ctx)
    partial = ctx.path(stages.TREES_EXTRA)
    saved = {(row["attempt"], row["tree"]["problem_id"]) for row in read_jsonl(partial)}
    assert len(saved) == crash and not ctx.path(stages.TREES_FINAL).exists()
    with partial.open("a") as fh:
        fh.write('{"key": "torn')  # a crash in the middle of the next append
    backend.questions.clear()
    monkeypatch.setattr(stages, "fault_point", lambda name: None)
    searched = record_searches(monkeypatch)
    metrics = stages.extra_rollouts(ctx)
    assert comparable(ctx.path(stages.TREES_FINAL)) == comparable(whole.path(stages.TREES_FINAL))
    assert not partial.exists() and not list(ctx.dir.glob("*.stale*"))
    assert metrics["resumed_trees"] == len({pid for _, pid in saved})
    assert metrics["hard_before"] == whole_metrics["hard_before"]
    assert metrics["hard_after"] == whole_metrics["hard_after"]
    for attempt, problems in whole_searched.items():
        again = searched.get(attempt, [])
        assert not {(attempt, pid) for pid in again} & saved  # nothing saved is extended again
        assert sorted(again + [pid for a, pid in saved if a == attempt]) == sorted(problems)
    if crash == saves_in(whole):  # every tree was saved: nothing is searched again, no engine started
        assert backend.questions == [] and metrics["generated_tokens"] == 0


def test_extra_rollouts_do_not_continue_trees_extended_from_other_trees(tmp_path, monkeypatch):
    ctx, backend = fake_round(tmp_path, monkeypatch, "stale")
    stages.generate(ctx)
    crash_at(monkeypatch, "extra_rollouts:tree", 2)
    with pytest.raises(Crash):
        stages.extra_rollouts(ctx)
    saved = ctx.path(stages.TREES_EXTRA).read_text()
    # trees.jsonl generated again (another policy, say): the saved extensions are not continued
    trees = list(read_trees(ctx.path(stages.TREES)))
    trees[0].meta["seconds"] += 1.0
    stages.write_trees(ctx.path(stages.TREES), trees)
    monkeypatch.setattr(stages, "fault_point", lambda name: None)
    assert stages.extra_rollouts(ctx)["resumed_trees"] == 0
    assert ctx.path(stages.TREES_EXTRA + ".stale").read_text() == saved  # kept aside, not deleted
    assert not ctx.path(stages.TREES_EXTRA).exists()


def test_generation_resumes_after_a_crash_at_its_fault_point(tmp_path, monkeypatch):
    whole, _ = fake_round(tmp_path, monkeypatch, "whole")
    stages.generate(whole)
    ctx, backend = fake_round(tmp_path, monkeypatch, "crashed")
    crash_at(monkeypatch, "generate:tree", 3)
    with pytest.raises(Crash):
        stages.generate(ctx)
    assert len(list(read_trees(ctx.path(stages.TREES)))) == 3
    monkeypatch.setattr(stages, "fault_point", lambda name: None)
    assert stages.generate(ctx)["resumed_problems"] == 3
    by_id = lambda path: sorted(comparable(path), key=lambda t: t["problem_id"])  # noqa: E731
    assert by_id(ctx.path(stages.TREES)) == by_id(whole.path(stages.TREES))


def test_a_stage_reaches_its_fault_point_after_its_record_only(tmp_path, monkeypatch):
    ctx = stages.round_context(config(tmp_path), 1, policy="p")
    write_jsonl(ctx.path(stages.TREES_FINAL), [_tree("a", "k").to_dict()])
    crash_at(monkeypatch, "stage:done", 1)
    with pytest.raises(Crash):
        stages.run_stage(ctx, "bucket")
    assert stages.finished_stage(ctx, "bucket") is not None
    assert stages.run_stage(ctx, "bucket")["problems"] == 1  # recorded: not run again, no fault point


def test_a_policy_trained_on_every_rounds_data_reads_and_hashes_them_all(tmp_path, monkeypatch):
    """sft_data: all_rounds (rStar: each round from the base model on all data so far): round 3 trains
    on rounds 1-3's rows, a row selected twice counts once, and an earlier round's file is in the key."""
    import training.sft

    trained = []
    monkeypatch.setattr(training.sft, "train_sft",
                        lambda data, base, out, cfg, **kw: trained.append((base, list(read_jsonl(data)))) or {})
    monkeypatch.setattr("evomath.models.resolve_model", lambda spec: spec)
    cfg = config(tmp_path, sft_data="all_rounds", sft_from="base", policy="base-model")
    row = {"prompt": "p", "problem_id": "x", "avg_q": 1.0, "min_q": 1.0}
    for k, completions in ((1, ["a"]), (2, ["b", "a"]), (3, ["c"])):
        write_jsonl(stages.round_context(cfg, k).path(stages.SFT_DATA), [row | {"completion": c} for c in completions])
    ctx = stages.round_context(cfg, 3, policy="round-2-policy")
    metrics = stages.train_policy(ctx)
    (base, rows), = trained
    assert base == "base-model" and [r["completion"] for r in rows] == ["a", "b", "c"]
    assert metrics["policy_examples"] == 3 and ctx.path(stages.SFT_UNION).exists()
    key = stages.stage_key(ctx, "train_policy")
    write_jsonl(stages.round_dir(cfg, 1) / stages.SFT_DATA, [row | {"completion": "z"}])
    assert stages.stage_key(ctx, "train_policy") != key
    # the default: the round's own data only, and only its own file in the key
    own = stages.round_context(config(tmp_path), 3, policy="p")
    assert stages.stage_inputs(own, "train_policy") == [own.path(stages.SFT_DATA), own.path(stages.STEP_LABELS)]


def test_prm_labels_from_trees_with_the_arithmetic_rule(tmp_path):
    """label_source trees+arithmetic: a right answer reached through an underived step (a number no
    step computed) teaches the PRM nothing good; with label_source trees the gold answer calls it good."""
    tree = Tree("p", "Tom has 2 pens and gets 3 more. How many pens?", "5")
    derived = tree.add_child(tree.root, "He has 2 + 3 = 5 pens.\n\n", visits=1, value_sum=1.0)
    tree.add_child(derived, "The answer is \\boxed{5}.", terminal="answer", answer="5", correct=True, visits=1,
                   value_sum=1.0)
    guessed = tree.add_child(tree.root, "He has 5 pens.\n\n", visits=1, value_sum=1.0)
    tree.add_child(guessed, "The answer is \\boxed{5}.", terminal="answer", answer="5", correct=True, visits=1,
                   value_sum=1.0)
    append_trees(tmp_path / stages.TREES_FINAL, [tree])
    labels = {}
    for source in ("trees", "trees+arithmetic"):
        config = ExperimentConfig.model_validate({"search": {"step_format": "natural"}, "prm": {"label_source": source}})
        ctx = stages.RoundContext(config, 1, tmp_path, "policy", None)
        assert stages._step_labels(ctx, "prm")["labelled_solutions"] == 2
        labels[source] = [row["labels"] for row in read_jsonl(ctx.path(stages.STEP_LABELS))]
    assert labels == {"trees": [[1.0, 1.0], [1.0, 1.0]], "trees+arithmetic": [[1.0, 1.0], [0.0, 0.0]]}
    with pytest.raises(ValueError, match="label_source trees\\+arithmetic reads natural-language steps"):
        ExperimentConfig.model_validate({"search": {"step_format": "code"}, "prm": {"label_source": "trees+arithmetic"}})
