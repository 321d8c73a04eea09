"""What a round's SFT data is, on small hand-made trees over a demo problem: size, length, distinct
solutions, and examples right only through a wrong step."""

from __future__ import annotations

import pytest

from evomath.demo_data import demo_problems
from evomath.formats import make_format
from evomath.problem import Problem
from evomath.tree import Tree
from training.sft_data import select_sft
from training.sft_stats import normalise, sft_stats, wrong_step_before_answer

FMT = make_format("natural")
# "Tom has 12 pens and gets 5 more pens. ..." : one addition
PROBLEM = next(p for p in demo_problems("train", 200, ops=(1,)) if " more " in p.question and "has" in p.question)
(A, N), (TOTAL,) = PROBLEM.meta["given"], PROBLEM.meta["values"]


def words(text: str) -> int:
    return len(text.split())


def solution(tree: Tree, steps: list[str], q: float) -> None:
    """One correct trajectory of ``steps`` (each node's Q ``q``), its last step the answer."""
    node = tree.root
    for text in steps[:-1]:
        node = tree.add_child(node, text)
        node.visits, node.value_sum = 1, q
    leaf = tree.add_child(node, steps[-1], terminal="answer", answer=PROBLEM.answer, correct=True)
    leaf.visits, leaf.value_sum = 1, q


def demo_tree() -> Tree:
    """A right solution, the same with another full stop and capital, and one whose middle step
    restates a fact with a wrong number but still ends on the right answer."""
    tree = Tree(PROBLEM.id, PROBLEM.question, PROBLEM.answer)
    answer = f"The answer is \\boxed{{{TOTAL}}}."
    solution(tree, [f"{A} + {N} = {TOTAL} pens.\n\n", answer], 0.9)
    solution(tree, [f"{A} + {N} = {TOTAL} pens!\n\n", answer.lower()], 0.8)
    solution(tree, [f"First, {A} pens is {A + 101} pens.\n\n", f"{A} + {N} = {TOTAL}.\n\n", answer], 0.7)
    return tree


def test_size_length_distinct_share_and_wrong_steps():
    rows = select_sft([demo_tree()], FMT, top_k=3)
    assert len(rows) == 3
    stats = sft_stats(rows, {PROBLEM.id: PROBLEM}, FMT.split, words)
    assert stats["sft_examples"] == 3 and stats["sft_problems"] == 1
    assert stats["sft_avg_tokens"] == pytest.approx(sum(words(r["completion"]) for r in rows) / 3)
    assert stats["sft_distinct_share"] == pytest.approx(2 / 3)  # the first two differ only in punctuation and case
    assert stats["sft_checked"] == 3 and stats["sft_wrong_step_share"] == pytest.approx(1 / 3)


def test_the_final_step_is_the_answer_not_a_wrong_step():
    """A right answer stated without a box ends the solution: the checker's 'no boxed answer' verdict on
    the last step is not a wrong step on the way."""
    assert wrong_step_before_answer(PROBLEM, [f"{A} + {N} = {TOTAL}.\n\n", f"The answer is {TOTAL}."]) is False
    assert wrong_step_before_answer(PROBLEM, [f"{A} + {N} = {TOTAL + 1}.\n\n", f"The answer is {TOTAL}."]) is True


def test_problems_without_known_values_or_code_steps_are_not_checked():
    rows = select_sft([demo_tree()], FMT, top_k=3)
    other = Problem(PROBLEM.id, PROBLEM.question, PROBLEM.answer)  # e.g. a GSM8K problem: no intermediate values
    assert wrong_step_before_answer(other, ["x"]) is None
    for problems, split in (({PROBLEM.id: other}, FMT.split), ({PROBLEM.id: PROBLEM}, None), ({}, FMT.split)):
        stats = sft_stats(rows, problems, split, words)
        assert "sft_wrong_step_share" not in stats and stats["sft_examples"] == 3


def test_no_data():
    assert sft_stats([], {}, FMT.split, words) == {"sft_examples": 0, "sft_problems": 0}


def test_normalise_keeps_the_arithmetic():
    assert normalise("Tom has 12 + 5 = 17 pens.\n\n") == normalise("tom  has 12 + 5 = 17 pens!")
    assert normalise("12 + 5 = 17") != normalise("12 - 5 = 7")


def test_the_select_sft_stage_records_them(tmp_path, monkeypatch):
    from evolution import stages
    from evomath.config import ExperimentConfig
    from evomath.tree import write_trees

    cfg = ExperimentConfig(name="unit", run_dir=tmp_path, search={"step_format": "natural"})
    ctx = stages.round_context(cfg, 2, policy="p")
    write_trees(ctx.path(stages.TREES_FINAL), [demo_tree()])
    monkeypatch.setattr(stages, "_policy_format", lambda ctx: FMT)
    monkeypatch.setattr(stages, "_token_counter", lambda ctx: words)
    monkeypatch.setattr(stages, "training_problems", lambda config: [PROBLEM])
    metrics = stages.select_sft(ctx)
    assert metrics["sft_examples"] == 2 and metrics["sft_wrong_step_share"] == 0.0  # top 2: the right ones
    assert metrics["sft_distinct_share"] == pytest.approx(0.5)
    assert metrics["artifacts"] == {"sft": str(ctx.path(stages.SFT_DATA))}
