"""Evaluation on the real engine (embedded SmolLM2-135M) with a tiny PPM: every kind of method
runs, the artifacts are written and consistent, and a policy directory is refused as a PPM."""

from __future__ import annotations

import json

import pytest

from deployments.cli import main
from evaluation import evaluate_suite
from evomath.arithmetic import derivation_error
from evomath.config import SearchConfig
from evomath.files import read_jsonl
from evomath.formats import make_format
from evomath.grading import Grader
from evomath.problems import load_benchmark
from evomath.scoring import HEAD, MARKER_KEY, NotARewardModelError, load_scorer
from evomath.tree import read_trees

pytestmark = pytest.mark.slow

METHODS = ["greedy", "maj@4", "ppm-bon@4", "ppm+arithmetic-bon@4", "arithmetic-bon@4", "beam-2x2", "mcts@2"]
SMALL = SearchConfig(
    step_format="natural", prompt_style="chat", rollouts=2, n_candidates=3, max_step_tokens=40, max_depth=4,
    temperature=0.8, concurrent_problems=8,
)


@pytest.fixture(scope="module")
def tiny_ppm(embedded_model_dir, tmp_path_factory):
    """An untrained PPM with the policy's architecture and tokenizer, shrunk to 2 narrow layers:
    the real scorer path, at a cost that keeps this test short on 2 shared cores."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("ppm")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = AutoConfig.from_pretrained(embedded_model_dir, num_labels=1, pad_token_id=pad, num_hidden_layers=2,
                                        hidden_size=64, intermediate_size=128, num_attention_heads=2,
                                        num_key_value_heads=1, head_dim=32)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    config[MARKER_KEY] = {"head": HEAD, "format": "natural"}
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_evaluate_every_method(policy_backend, tiny_ppm, tmp_path):
    problems = load_benchmark("demo_test", limit=3)
    fmt = make_format("natural", "chat", chat=policy_backend.chat_prompt)
    scorer = load_scorer(tiny_ppm)
    try:
        with Grader(workers=1) as grader:
            rows = evaluate_suite({"demo_test": problems}, METHODS, policy_backend, fmt, SMALL, None, grader, scorer,
                                  tmp_path, progress=False)
    finally:
        scorer.close()
    assert [r["method"] for r in rows] == METHODS and all(r["problems"] == 3 for r in rows)
    for row in rows:
        assert 0 <= row["accuracy"] <= row["pass_at_k"] <= 1
        assert row["tokens_per_question"] > 0 and row["seconds_per_question"] > 0
    got = {r["method"]: r for r in rows}
    assert got["greedy"]["avg_solutions"] <= 1 and got["maj@4"]["avg_solutions"] <= 4
    assert got["beam-2x2"]["avg_solutions"] <= 2
    # maj@4 and ppm-bon@4 choose among the same samples; only the PPM's time differs
    for column in ("tokens_per_question", "avg_solutions", "avg_steps", "pass_at_k"):
        assert got["maj@4"][column] == got["ppm-bon@4"][column]
    assert got["ppm-bon@4"]["seconds_per_question"] > got["maj@4"]["seconds_per_question"]

    assert json.loads((tmp_path / "summary.json").read_text()) == rows
    assert (tmp_path / "accuracy_vs_tokens.png").read_bytes().startswith(b"\x89PNG")
    for method in METHODS:
        records = list(read_jsonl(tmp_path / "demo_test" / f"{method}.jsonl"))
        assert [r["problem_id"] for r in records] == [p.id for p in problems]
        assert all(r["any_correct"] or not r["correct"] for r in records)
    mcts_trees = list(read_trees(tmp_path / "trees" / "mcts@2" / "demo_test.jsonl"))
    assert len(mcts_trees) == 6 and {t.problem_id for t in mcts_trees} == {p.id for p in problems}

    # ppm-bon@4 picked, per problem, the answered sample with the best minimum step score;
    # ppm+arithmetic-bon@4 by the same score less 1 from the first step the rule stops on
    samples = list(read_trees(tmp_path / "trees" / "samples@4" / "demo_test.jsonl"))
    picked = list(read_jsonl(tmp_path / "demo_test" / "ppm-bon@4.jsonl"))
    gated = list(read_jsonl(tmp_path / "demo_test" / "ppm+arithmetic-bon@4.jsonl"))
    for tree, record, gated_record in zip(samples, picked, gated, strict=True):
        ends = [n for n in tree.answered() if n.answer is not None]
        if ends:
            assert record["answer"] == max(ends, key=lambda n: min(p.prior for p in tree.path(n))).answer
            assert gated_record["answer"] == max(ends, key=lambda n: gated_min(tree, n)).answer


def gated_min(tree, end) -> float:
    """The minimum over a chain's steps of the PPM's (s + 1) / 2, less 1 from the first step whose
    prefix breaks the arithmetic rule on."""
    texts = [p.text for p in tree.path(end)]
    stopped = next((i for i in range(len(texts)) if derivation_error(tree.question, texts[: i + 1])), len(texts))
    return min((p.prior + 1) / 2 - (i >= stopped) for i, p in enumerate(tree.path(end)))


def test_a_policy_is_refused_as_ppm(embedded_model_dir, capsys):
    with pytest.raises(NotARewardModelError, match="not an evomath PPM"):
        load_scorer(embedded_model_dir)
    code = main(["evaluate", "--benchmark", "demo_test", "--limit", "3", "--methods", "greedy,ppm-bon@4",
                 "--ppm", str(embedded_model_dir)])
    assert code == 2
    assert "is not an evomath PPM" in capsys.readouterr().err
