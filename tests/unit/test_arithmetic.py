"""The gold-free arithmetic check of natural steps, and its agreement with the exact demo checker."""

from __future__ import annotations

import pytest

from evomath.arithmetic import derivation_error, evaluate, question_numbers
from evomath.demo_data import demo_problems, first_error
from evomath.demo_phrasing import phrasing_problems

QUESTION = "Nina has 13 stickers and gives 2 stickers to Tom. How many stickers does Nina have now?"


def test_numbers_of_the_question_in_digits_and_words():
    assert question_numbers("Ann has twice as many as 3 friends, and a dozen $1,200.50 pens.") == {2.0, 3.0, 12.0, 1200.5}


def test_evaluate_allows_the_four_operations_only():
    assert evaluate("3 x 4 + 6 / 2") == 15.0 and evaluate("15 cookies / 5 friends") == 3.0
    assert evaluate("2 bags x 3 shells") == 6.0
    assert evaluate("2 ** 10") is None and evaluate("1 / 0") is None and evaluate("__import__") is None


@pytest.mark.parametrize("steps", [
    ["Nina has 13 stickers and gives away 2, so she has 13 - 2 = 11 stickers.\n\n", "The answer is \\boxed{11}."],
    ["1. Nina has 13 stickers.\n\n", "2. She gives 2 to Tom: 13 - 2 = 11.\n\n", "She has 11 left. \\boxed{11}"],
    ["Half of 10 is 10 / 2 = 5, but the question says 13 - 2 = 11.\n\n"],  # "half" is no number here: 10 is
    ["Nina gives away 2 of her 13 stickers, so she keeps 13 - 2 = \\boxed{11}."],  # the boxed result of an equation
])
def test_derived_steps_pass(steps):
    question = QUESTION if "Half" not in steps[0] else QUESTION.replace("13", "13, half of 10,")
    assert all(derivation_error(question, steps[: k + 1]) is None for k in range(len(steps)))


@pytest.mark.parametrize("steps, reason", [
    (["She has 13 - 2 = 12 stickers.\n\n"], "false equation 13 - 2 = 12"),
    (["13 stickers + 2 stickers = 16 stickers.\n\n"], "false equation 13 stickers + 2 stickers = 16"),
    (["She has 13 - 2 = 11 stickers.\n\n", "13 + 11 = 24 stickers.\n\n"], None),  # true, and from known numbers
    (["She has 13 - 3 = 10 stickers.\n\n"], "3 in 13 - 3"),  # a miscopied fact
    (["She ends up with 11 stickers.\n\n"], "11 is neither"),  # a total from nowhere
    (["Nina has 13 stickers.\n\n", "The answer is \\boxed{11}."], "answer '11'"),  # a guessed answer
    (["Nina has 13 stickers.\n\n", "The answer is \\boxed{13}."], "answer '13'"),  # one copied from the question
    (["The answer is \\boxed{eleven}."], "answer 'eleven'"),
    (["So 13 - 2 = \\boxed{12}."], "false equation 13 - 2 = 12"),  # a boxed result is an equation's too
])
def test_underived_steps_fail_naming_why(steps, reason):
    error = derivation_error(QUESTION, steps)
    assert (error is None) if reason is None else (reason in error), error


def test_only_the_new_step_is_judged():
    """An earlier wrong step was judged when it was new; what it computed falsely is not known."""
    steps = ["13 - 2 = 12.\n\n", "So 12 + 1 = 13.\n\n"]
    assert "false equation" in derivation_error(QUESTION, steps[:1])
    assert "12 in 12 + 1" in derivation_error(QUESTION, steps)


def test_reference_solutions_of_demo_problems_are_derived():
    """Every generated problem's reference solution passes the gold-free check (no false alarm on
    right arithmetic), in both template families, and the exact checker agrees that each is right."""
    for problem in demo_problems("train", 400) + demo_problems("test", 200) + phrasing_problems(200):
        steps = [s + "\n\n" for s in problem.meta["reference_steps"][:-1]] + [problem.meta["reference_steps"][-1]]
        assert first_error(problem, steps) is None
        for k in range(len(steps)):
            assert derivation_error(problem.question, steps[: k + 1]) is None, (problem.question, steps[: k + 1])


def sticker_samples():
    """Two answered samples of QUESTION: one derived (13 - 2 = 11), one with a false equation."""
    from evomath.tree import Tree

    tree = Tree("p", QUESTION, "11")
    right = tree.add_child(tree.root, "13 - 2 = 11 stickers.\n\n")
    answer = tree.add_child(right, "The answer is \\boxed{11}.", terminal="answer", answer="11")
    wrong = tree.add_child(tree.root, "13 + 2 = 16 stickers.\n\n")
    guess = tree.add_child(wrong, "The answer is \\boxed{16}.", terminal="answer", answer="16")
    return tree, (right, answer, wrong, guess)


def test_the_rule_scores_every_step_of_every_sample_through_the_evaluation_path():
    """benchmarks/verifiers.py's ``arithmetic`` verifier: the rule as a value function, each step
    of each answered sample +1 (derived) or -1, read by the same score_chains as a model's scores."""
    from evaluation.runs import score_chains
    from evomath.arithmetic import derivation_scores

    tree, (right, answer, wrong, guess) = sticker_samples()
    (scores,) = score_chains([tree], derivation_scores)
    assert scores == {right.id: 1.0, answer.id: 1.0, wrong.id: -1.0, guess.id: -1.0}


def test_a_model_behind_the_rule_ranks_only_what_the_rule_lets_through():
    """evaluation.runs.gated_scores: from a chain's first vetoed step on, its scores fall below
    every passed chain's (so best-of-N by weakest or last step picks the model's best passed one,
    however high the model scored a vetoed one), while the model's order holds within each side."""
    from evaluation.runs import gated_scores, score_chains
    from evaluation.select import best_by, chains, solution
    from evomath.arithmetic import derivation_scores

    tree, (right, answer, wrong, guess) = sticker_samples()
    made_up = tree.add_child(tree.root, "Ann has 99 stickers.\n\n")  # vetoed; the next step alone is derived
    later = tree.add_child(made_up, "13 - 2 = 11, so \\boxed{11}.", terminal="answer", answer="11")
    (rule,) = score_chains([tree], derivation_scores)
    assert rule[made_up.id] == -1.0 and rule[later.id] == 1.0
    model = {right.id: -0.5, answer.id: -0.2, wrong.id: 0.9, guess.id: 0.95, made_up.id: 0.3, later.id: 0.3}
    (gated,) = gated_scores([tree], [model], [rule])
    assert gated == pytest.approx({right.id: 0.25, answer.id: 0.4, wrong.id: -0.05, guess.id: -0.025,
                                   made_up.id: -0.35, later.id: -0.35})  # once vetoed, the chain stays below

    def best(scores: dict[int, float], agg: str) -> str:
        return best_by([solution(tree, c[-1], step_scores=scores) for c in chains(tree)],
                       lambda s: s.score(agg)).answer

    for agg in ("min", "last"):
        assert best(gated, agg) == "11"
        assert best(model, agg) == "16"  # the model alone prefers the vetoed guess
