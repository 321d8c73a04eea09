"""Policy data selection on hand-made trees: which trajectories, in which order, rendered how."""

import pytest

from evomath.files import read_jsonl
from evomath.formats import make_format
from evomath.tree import Tree, write_trees
from training import TrainingInputError
from training.sft_data import make_sft_data, select_sft


class MarkedFormat:
    """Renders visibly, so a test sees exactly which question and steps went in."""

    name = "marked"

    def render(self, question, steps):
        return f"Q: {question}\n", "|".join(steps)

    def trajectory(self, steps):
        return "".join(steps)


FMT = MarkedFormat()


def step(tree, parent, text, q=None, **fields):
    """A child whose Q is exactly ``q`` (one visit); ``q=None`` leaves it unvisited."""
    node = tree.add_child(parent, text, **fields)
    if q is not None:
        node.visits, node.value_sum = 1, q
    return node


def answer(tree, parent, text, q, correct, **fields):
    return step(tree, parent, text, q, terminal="answer", answer="7", correct=correct, **fields)


def ranked_tree() -> Tree:
    """Four correct trajectories (avg Q 0.8, 0.6, 0.7, 0.7) and a better but wrong one."""
    tree = Tree("p1", "What is 3 + 4?", "7")
    a = step(tree, tree.root, "a", 0.6)
    answer(tree, a, "a1", 1.0, True)  # avg 0.8
    answer(tree, a, "a2", 0.6, True)  # avg 0.6
    b = step(tree, tree.root, "b", 0.4)
    answer(tree, b, "b1", 1.0, True)  # avg 0.7, min 0.4
    c = step(tree, tree.root, "c", 0.5)
    answer(tree, c, "c1", 0.9, True)  # avg 0.7, min 0.5: wins the tie
    answer(tree, c, "c2", 1.0, False)  # avg 0.75 but wrong
    return tree


def test_top_two_by_average_q_ties_broken_by_minimum_q():
    rows = select_sft([ranked_tree()], FMT)
    assert [row["completion"] for row in rows] == ["a|a1", "c|c1"]
    assert [row["avg_q"] for row in rows] == pytest.approx([0.8, 0.7])
    assert [row["min_q"] for row in rows] == pytest.approx([0.6, 0.5])
    assert all(row["prompt"] == "Q: What is 3 + 4?\n" and row["problem_id"] == "p1" for row in rows)
    assert set(rows[0]) == {"prompt", "completion", "problem_id", "avg_q", "min_q"}


def test_top_k_is_respected():
    assert [row["completion"] for row in select_sft([ranked_tree()], FMT, top_k=1)] == ["a|a1"]
    assert [row["completion"] for row in select_sft([ranked_tree()], FMT, top_k=4)] == ["a|a1", "c|c1", "b|b1", "a|a2"]


def test_a_code_error_anywhere_on_the_path_excludes_the_trajectory():
    tree = ranked_tree()
    tree.nodes[1].code_error = True  # step "a": both of its trajectories go
    assert [row["completion"] for row in select_sft([tree], FMT)] == ["c|c1", "b|b1"]


def test_only_graded_correct_answers_are_selected():
    tree = Tree("p2", "q", "7")
    s = step(tree, tree.root, "s", 0.9)
    answer(tree, s, "wrong", 0.9, False)
    answer(tree, s, "ungraded", 0.9, None)
    step(tree, s, "deep", 0.9, terminal="too_deep")
    assert select_sft([tree], FMT) == []


def test_identical_step_lists_count_once():
    tree = Tree("p3", "q", "7")
    for _ in range(2):
        s = step(tree, tree.root, "same", 0.5)
        answer(tree, s, "end", 1.0, True)
    other = step(tree, tree.root, "other", 0.1)
    answer(tree, other, "end", 1.0, True)
    assert [row["completion"] for row in select_sft([tree], FMT)] == ["same|end", "other|end"]


def test_near_identical_solutions_count_once_when_asked():
    """'12 + 5 = 17.' and '12 + 5 = 17!' are one solution to the dedup; the third in rank takes the place."""
    tree = Tree("p4", "q", "7")
    for text, q in (("Tom has 12 + 5 = 17.", 0.9), ("tom has 12 + 5 = 17!", 0.8), ("So 17 - 5 = 12 back.", 0.1)):
        answer(tree, step(tree, tree.root, text, q), "end", 1.0, True)
    assert [row["completion"] for row in select_sft([tree], FMT)] == ["Tom has 12 + 5 = 17.|end",
                                                                     "tom has 12 + 5 = 17!|end"]
    assert [row["completion"] for row in select_sft([tree], FMT, near_duplicates=True)] == [
        "Tom has 12 + 5 = 17.|end", "So 17 - 5 = 12 back.|end"]


def test_problems_without_correct_trajectories_add_nothing_others_keep_order():
    hard = Tree("hard", "q", "7")
    answer(hard, hard.root, "x", -1.0, False)
    rows = select_sft([hard, ranked_tree()], FMT, top_k=1)
    assert [row["problem_id"] for row in rows] == ["p1"]


def test_make_sft_data_writes_rows_rendered_by_a_real_format(tmp_path):
    write_trees(tmp_path / "trees.jsonl", [ranked_tree()])
    fmt = make_format("natural", "few_shot")
    summary = make_sft_data(tmp_path / "trees.jsonl", tmp_path / "sft.jsonl", fmt)
    rows = list(read_jsonl(tmp_path / "sft.jsonl"))
    assert summary["examples"] == 2 and summary["problems"] == 1
    assert (rows[0]["prompt"], rows[0]["completion"]) == fmt.render("What is 3 + 4?", ["a", "a1"])


def test_make_sft_data_refuses_an_empty_selection_and_writes_nothing(tmp_path):
    hard = Tree("hard", "q", "7")
    answer(hard, hard.root, "x", -1.0, False)
    write_trees(tmp_path / "trees.jsonl", [hard])
    with pytest.raises(TrainingInputError, match="no correct, error-free trajectory in 1 trees"):
        make_sft_data(tmp_path / "trees.jsonl", tmp_path / "sft.jsonl", FMT)
    assert not (tmp_path / "sft.jsonl").exists()
