"""PRM and PQM training on a tiny random model: labels from trees, the step loss, serving, refusals."""

from __future__ import annotations

import json

import pytest
from tiny_model import make_tiny_model

from evomath.config import PRMConfig
from evomath.demo_data import demo_problems
from evomath.files import ArtifactError, write_jsonl
from evomath.formats import make_format
from evomath.problem import Problem
from evomath.scoring import NotARewardModelError, load_scorer
from evomath.tree import Tree
from training import TrainingInputError
from training.step_rewards import (
    checked_step_rows,
    mark_underived,
    read_step_rows,
    step_row,
    train_step_reward,
    tree_step_rows,
)

FMT = make_format("natural")
FAST = PRMConfig(learning_rate=1e-2, epochs=8, batch_size=8, per_device_batch_size=8, max_length=64,
                 heldout_fraction=0.0, bf16=False)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", dtype="float32")


def good_and_bad_rows():
    """'he gets 2 more .' is always followed by the right answer, 'he has 9 .' never."""
    rows = []
    for a in range(1, 5):
        question = f"tom has {a} pens ."
        rows.append(step_row(FMT, question, ["he gets 2 more .\n\n", f"the answer is {a + 2} ."], [1.0, 1.0], f"p{a}"))
        rows.append(step_row(FMT, question, ["he has 9 .\n\n", "the answer is 9 ."], [0.0, 0.0], f"p{a}"))
    return rows


def test_labels_from_trees_are_the_correct_leaf_fraction_and_q():
    tree = Tree("p", "q", "7")
    a = tree.add_child(tree.root, "A\n\n", visits=2, value_sum=0.0)
    tree.add_child(a, "right \\boxed{7}", terminal="answer", answer="7", correct=True, visits=1, value_sum=1.0)
    tree.add_child(a, "wrong \\boxed{8}", terminal="answer", answer="8", correct=False, visits=1, value_sum=-1.0)
    b = tree.add_child(tree.root, "B\n\n", visits=1, value_sum=-1.0)
    tree.add_child(b, "wrong \\boxed{9}", terminal="answer", answer="9", correct=False, visits=1, value_sum=-1.0)
    soft = {tuple(r["steps"]): r["labels"] for r in tree_step_rows([tree], FMT, "soft")}
    assert list(soft.values()) == [[0.5, 1.0], [0.5, 0.0], [0.0, 0.0]]
    assert [r["labels"] for r in tree_step_rows([tree], FMT, "hard")] == [[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]]
    assert [r["labels"] for r in tree_step_rows([tree], FMT, "q")] == [[0.0, 1.0], [0.0, -1.0], [-1.0, -1.0]]
    row = tree_step_rows([tree], FMT, "q")[0]
    assert row["prompt"] + "".join(row["steps"]) == "q\n\nA\n\nright \\boxed{7}"  # the scorer's text


def test_checked_labels_mark_every_step_from_the_first_wrong_one():
    """The exact checker's labels disagree with the gold answer's where a chain is right only by luck
    (a wrong step, then the right answer) and where a right step led to a wrong answer."""
    problem = next(p for p in demo_problems("train", 60, ops=(2,)) if "boxes with" in p.question
                   and "buys" in p.question)
    (k, m, bought), (total, left) = problem.meta["given"], problem.meta["values"]
    tree = Tree(problem.id, problem.question, problem.answer)
    right = tree.add_child(tree.root, f"She has {k} * {m} = {total} pens.\n\n", visits=2, value_sum=0.0)
    tree.add_child(right, f"So {total} + {bought} = \\boxed{{{left}}}.", terminal="answer", answer=str(left),
                   correct=True, visits=1, value_sum=1.0)
    tree.add_child(right, f"So \\boxed{{{left + 1}}}.", terminal="answer", answer=str(left + 1), correct=False,
                   visits=1, value_sum=-1.0)
    lucky = tree.add_child(tree.root, f"She has {k} + {m} = {k + m} pens.\n\n", visits=1, value_sum=1.0)
    tree.add_child(lucky, f"So \\boxed{{{left}}}.", terminal="answer", answer=str(left), correct=True,
                   visits=1, value_sum=1.0)
    rows = checked_step_rows([tree], FMT, {problem.id: problem})
    assert [r["labels"] for r in rows] == [[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]]
    assert [r["labels"] for r in tree_step_rows([tree], FMT, "hard")][2] == [1.0, 1.0]  # gold calls luck right
    # the arithmetic rule, without gold or checker, stops the lucky answer (a number no step computed)
    assert [r["labels"] for r in tree_step_rows(mark_underived([tree]), FMT, "hard")] == [[1.0, 1.0], [1.0, 0.0],
                                                                                         [0.0, 0.0]]
    with pytest.raises(TrainingInputError, match=f"{problem.id!r}: not among the problems given"):
        checked_step_rows([tree], FMT, {})
    plain = Tree("p", "q", "7")
    with pytest.raises(TrainingInputError, match="'p': not a generated demo problem"):
        checked_step_rows([plain], FMT, {"p": Problem("p", "q", "7")})


@pytest.mark.parametrize("kind", ["prm", "pqm"])
def test_a_step_reward_model_learns_its_labels_and_serves_as_its_kind(kind, base, tmp_path):
    rows = good_and_bad_rows()
    if kind == "pqm":
        rows = [dict(r, labels=[2 * v - 1 for v in r["labels"]]) for r in rows]
    write_jsonl(tmp_path / "labels.jsonl", rows)
    metrics = train_step_reward(tmp_path / "labels.jsonl", base, tmp_path / kind, FAST, kind, progress=False)
    assert metrics["labelled_steps"] == 16 and metrics["train_loss"] > 0
    marker = json.loads((tmp_path / kind / "config.json").read_text())["evomath_reward_model"]
    assert marker == {"kind": kind, "head": "sigmoid" if kind == "prm" else "tanh", "format": "natural"}
    scorer = load_scorer(tmp_path / kind, kind=kind)
    good, bad = scorer.score_prefixes([("tom has 3 pens .", ["he gets 2 more .\n\n"]),
                                       ("tom has 3 pens .", ["he has 9 .\n\n"])])
    scorer.close()
    assert -1 <= bad[0] < good[0] <= 1
    with pytest.raises(NotARewardModelError, match=f"is a {kind.upper()}, not a PPM"):
        load_scorer(tmp_path / kind)  # a PRM/PQM directory given where a PPM is expected


def test_bad_step_labels_are_refused_naming_file_line_and_field(tmp_path):
    rows = good_and_bad_rows()
    bad = [dict(rows[0]), dict(rows[1], labels=[0.0, 1.5]), dict(rows[2], labels=[1.0])]
    for row in bad[1:]:
        write_jsonl(tmp_path / "bad.jsonl", [bad[0], row])
        with pytest.raises(ArtifactError, match=r"bad.jsonl:2: labels"):
            read_step_rows(tmp_path / "bad.jsonl", "prm")
    write_jsonl(tmp_path / "q.jsonl", [dict(rows[0], labels=[-1.0, 1.0])])
    assert read_step_rows(tmp_path / "q.jsonl", "pqm")  # Q labels live in [-1, 1]
    with pytest.raises(ArtifactError, match=r"q.jsonl:1: labels\[0\]: -1.0 is outside \[0, 1\] for a PRM"):
        read_step_rows(tmp_path / "q.jsonl", "prm")
