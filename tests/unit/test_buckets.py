"""Difficulty buckets on hand-made trees."""

from evomath.problems import Problem
from evomath.tree import Tree
from training.buckets import bucket_counts, bucket_of, hard_problem_ids, in_buckets


def tree_with(pid: str, *outcomes) -> Tree:
    """A root with one step per outcome: True/False = graded answer, None = ungraded answer, "too_deep" etc."""
    tree = Tree(pid, f"question {pid}", "7")
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, str):
            tree.add_child(tree.root, f"step {i}", terminal=outcome)
        else:
            tree.add_child(tree.root, f"step {i}", terminal="answer", answer="7", correct=outcome)
    return tree


def test_all_answered_correct_is_easy_even_with_failed_branches():
    assert bucket_of(tree_with("p", True, True)) == "easy"
    assert bucket_of(tree_with("p", True, "too_deep", "code_errors")) == "easy"


def test_mixed_answers_are_medium():
    assert bucket_of(tree_with("p", True, False)) == "medium"
    assert bucket_of(tree_with("p", False, "too_deep", True)) == "medium"


def test_no_correct_answer_is_hard():
    assert bucket_of(tree_with("p", False, False)) == "hard"
    assert bucket_of(tree_with("p", None, False)) == "hard"  # an ungraded answer is not a correct one


def test_no_answered_terminal_at_all_is_hard():
    assert bucket_of(tree_with("p", "too_deep", "code_errors", "no_step")) == "hard"
    assert bucket_of(tree_with("p")) == "hard"  # the search produced nothing


def test_counts_list_every_bucket_and_hard_ids_keep_order():
    trees = [
        tree_with("e1", True),
        tree_with("h1", False),
        tree_with("m1", True, False),
        tree_with("h2", "too_deep"),
        tree_with("e2", True, True),
    ]
    assert bucket_counts(trees) == {"easy": 2, "medium": 1, "hard": 2}
    assert bucket_counts([]) == {"easy": 0, "medium": 0, "hard": 0}
    assert hard_problem_ids(trees) == ["h1", "h2"]


def test_a_deep_correct_answer_counts():
    tree = Tree("deep", "q", "7")
    first = tree.add_child(tree.root, "a")
    second = tree.add_child(first, "b")
    tree.add_child(second, "c", terminal="answer", answer="7", correct=True)
    tree.add_child(first, "d", terminal="answer", answer="8", correct=False)
    assert bucket_of(tree) == "medium"


def test_a_problem_solved_only_through_failing_code_is_hard():
    tree = Tree("p", "question", "7")
    broken = tree.add_child(tree.root, "x = 1 +", code_error=True, consecutive_errors=1)
    tree.add_child(broken, "so \\boxed{7}", terminal="answer", answer="7", correct=True)
    assert bucket_of(tree) == "hard"  # nothing to fine-tune on: extra rollouts are what it needs
    tree.add_child(tree.root, "clean \\boxed{7}", terminal="answer", answer="7", correct=True)
    assert bucket_of(tree) == "medium"


def test_in_buckets_keeps_input_order_and_drops_problems_without_a_tree():
    problems = [Problem(pid, f"question {pid}", "7") for pid in ("m2", "e1", "m1", "untreed")]
    by_id = {"m1": "medium", "m2": "medium", "e1": "easy"}
    assert [p.id for p in in_buckets(problems, by_id, ["medium"])] == ["m2", "m1"]
    assert [p.id for p in in_buckets(problems, by_id, ["easy", "medium"])] == ["m2", "e1", "m1"]
    assert in_buckets(problems, by_id, ["hard"]) == []
