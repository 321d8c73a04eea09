"""The generated demo problems: correct, graded in difficulty, simple, and a held-out test split."""

from __future__ import annotations

import collections
import contextlib
import io
import re

import pytest

from evomath.demo_data import demo_problems, render_reference
from evomath.formats import make_format

TRAIN = demo_problems("train", 2000)
TEST = demo_problems("test", 400)


def test_deterministic_and_prefix_stable():
    assert demo_problems("train", 50) == TRAIN[:50]
    assert [p.question for p in demo_problems("test", 30)] == [p.question for p in TEST[:30]]
    assert demo_problems("train", 20, seed=1) != TRAIN[:20]


def test_test_split_is_disjoint_from_train():
    train_questions = {p.question for p in demo_problems("train", 5000)}
    assert train_questions.isdisjoint(p.question for p in TEST)
    # disjoint by construction: other training seeds never produce a test problem either
    other = {p.question for s in (1, 2, 3) for p in demo_problems("train", 500, seed=s)}
    assert other.isdisjoint(p.question for p in TEST)
    assert len({p.question for p in TEST}) == len(TEST)
    assert len({p.id for p in TRAIN + TEST}) == len(TRAIN) + len(TEST)


def test_difficulty_cycles_and_can_be_chosen():
    counts = collections.Counter(p.meta["ops"] for p in TEST)
    assert counts == {1: 100, 2: 100, 3: 100, 4: 100}
    assert {p.meta["ops"] for p in demo_problems("train", 30, ops=(1,))} == {1}
    with pytest.raises(ValueError):
        demo_problems("train", 5, ops=(5,))
    with pytest.raises(ValueError):
        demo_problems("dev", 5)


_EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")


def test_reference_steps_are_correct_arithmetic():
    for problem in TRAIN + TEST:
        steps = problem.meta["reference_steps"]
        equations = [m.groups() for s in steps for m in _EQUATION.finditer(s)]
        assert len(equations) == problem.meta["ops"] == len(steps) - 1, problem.id
        for a, op, b, result in equations:
            a, b, result = int(a), int(b), int(result)
            exact = {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]
            assert exact == result and result >= 2, problem.id  # whole, positive intermediate results
        assert steps[-1] == f"The answer is \\boxed{{{problem.answer}}}.", problem.id
        assert int(equations[-1][3]) == int(problem.answer), problem.id


def test_reference_program_runs_to_the_answer():
    fmt = make_format("code")
    for problem in TRAIN[:300] + TEST[:100]:
        steps = render_reference(problem, fmt)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(fmt.program(steps), {})
        assert out.getvalue().strip() == problem.answer, problem.id
        assert f"<output>{problem.answer}<end_of_output>" in steps[-2], problem.id


@pytest.mark.parametrize("name", ["code", "natural"])
def test_render_reference_round_trips(name):
    fmt = make_format(name)
    for problem in TRAIN[:50]:
        steps = render_reference(problem, fmt)
        prompt, completion = fmt.render(problem.question, steps)
        assert fmt.split(completion) == steps
        parsed = [fmt.parse_step(s, "stop") for s in steps]
        assert all(p is not None for p in parsed)
        assert parsed[-1].is_final and parsed[-1].answer == problem.answer
        assert not any(p.is_final for p in parsed[:-1])
        assert prompt.endswith(problem.question + "\n<|assistant|>: " + fmt.bare_suffix)


def test_language_stays_simple():
    one_op = [p for p in TRAIN if p.meta["ops"] == 1]
    assert all(len(p.question.split()) <= 30 for p in one_op)
    assert max(len(p.question.split()) for p in TRAIN) <= 70
    assert max(int(p.answer) for p in TRAIN) <= 200
    assert any(re.fullmatch(r"\w+ has \d+ [\w ]+ and (gets|buys|finds|earns) \d+ more [\w ]+\. How many .*", p.question) for p in one_op)


def test_variety():
    assert len({p.question.split()[0] for p in TRAIN}) >= 12  # names
    assert len({re.search(r"How many ([\w ]+?) does", p.question).group(1) for p in TRAIN}) >= 12  # items
    assert len({p.question for p in TRAIN}) == len(TRAIN)


def test_generated_problems_know_their_numbers_and_true_values():
    from evomath.demo_data import first_error

    for problem in demo_problems("train", 40, ops=(1, 2, 3, 4)):
        assert problem.meta["values"][-1] == int(problem.answer)
        assert first_error(problem, problem.meta["reference_steps"]) is None  # the reference is right


def test_the_step_checker_finds_the_first_wrong_step():
    from evomath.demo_data import check_step, first_error

    problem = next(p for p in demo_problems("train", 60, ops=(2,)) if "boxes with" in p.question
                   and "buys" in p.question)  # "Sara has 5 boxes with 6 pens in each box. She buys 9 more pens."
    (k, m, bought), (total, left) = problem.meta["given"], problem.meta["values"]
    right = [f"She has {k} * {m} = {total} pens.\n\n", f"She buys {bought}, so {total} + {bought} = {left}.\n\n",
             f"The answer is \\boxed{{{left}}}."]
    assert first_error(problem, right) is None
    assert first_error(problem, [f"She has {k} + {m} = {k + m} pens.\n\n", *right[1:]]) == 0  # wrong operation
    assert first_error(problem, [f"She has {k} * {m} = {total + 1} pens.\n\n", *right[1:]]) == 0  # false arithmetic
    assert first_error(problem, [f"1. She has {k + 100} boxes.\n\n", *right]) == 0  # a restated fact, wrong number
    assert first_error(problem, [*right[:2], f"The answer is \\boxed{{{left + 1}}}."]) == 2
    assert first_error(problem, right[:2]) == 1  # no answer at all: wrong at its last step
    assert check_step(problem, f"Step 7: She has {k} boxes of {m} pens.")  # the enumeration is no number
