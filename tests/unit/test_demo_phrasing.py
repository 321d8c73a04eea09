"""The generalisation benchmark: right answers, held-out arithmetic, and no sentence in a shape the
training generator writes."""

from __future__ import annotations

import collections
import re

import pytest

from evomath.demo_data import NAMES, THINGS, demo_problems, first_error, held_out
from evomath.demo_phrasing import phrasing_problems
from evomath.errors import InputError
from evomath.problems import BENCHMARKS, load_benchmark

PHRASING = phrasing_problems(1000)
TRAIN = demo_problems("train", 3000, ops=(1, 2))

_WORDS = {name for name, _ in NAMES} | {"he", "she", "him", "his", "her"}
_NOUNS = sorted({t.plural for t in THINGS} | {c for t in THINGS for c in t.container}, key=len, reverse=True)


def sentences(question: str) -> list[str]:
    return re.split(r"(?<=[.?])\s+", question)


def shape(sentence: str) -> str:
    """A sentence with its numbers, names, pronouns and nouns abstracted: what a template fixes."""
    text = re.sub(r"\d+", "#", sentence)
    for noun in _NOUNS:
        text = re.sub(rf"\b{noun}\b", "X", text)
    return " ".join("N" if w.strip(".,?'s").lower() in {n.lower() for n in _WORDS} else w for w in text.split())


def test_deterministic_sized_and_prefix_stable():
    assert phrasing_problems(50) == PHRASING[:50]
    assert [p.question for p in phrasing_problems(30)] == [p.question for p in PHRASING[:30]]
    assert phrasing_problems(20, seed=1) != PHRASING[:20]
    assert len({p.question for p in PHRASING}) == len({p.id for p in PHRASING}) == 1000
    assert collections.Counter(p.meta["ops"] for p in phrasing_problems(400)) == {1: 200, 2: 200}
    with pytest.raises(ValueError):
        phrasing_problems(5, ops=(3,))


def test_registered_as_a_benchmark_with_an_operation_range():
    assert "demo_phrasing" in BENCHMARKS
    assert [p.question for p in load_benchmark("demo_phrasing")] == [p.question for p in PHRASING]
    assert {p.meta["ops"] for p in load_benchmark("demo_phrasing:2", limit=40)} == {2}
    assert len(load_benchmark("demo_phrasing:1-2", limit=400)) == 400
    with pytest.raises(InputError, match="within 1-2"):
        load_benchmark("demo_phrasing:1-3")


def _replay(skeleton) -> int:
    """The answer of an arithmetic skeleton, computed independently of the generator."""
    value = 0
    for kind, *args in skeleton:
        k = args[0] if args else 2
        if kind == "has":
            value = k
        elif kind == "groups":
            value = args[0] * args[1]
        elif kind in ("add", "sub"):
            value += k if kind == "add" else -k
        elif kind in ("double", "times"):
            value *= k
        else:  # half, share
            value //= k
    return value


_EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")


def test_answers_are_right_and_every_intermediate_value_whole():
    for problem in PHRASING:
        steps = problem.meta["reference_steps"]
        equations = [m.groups() for s in steps for m in _EQUATION.finditer(s)]
        assert len(equations) == problem.meta["ops"] == len(steps) - 1, problem.id
        for a, op, b, result in equations:
            a, b, result = int(a), int(b), int(result)
            assert {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op] == result >= 2, problem.id
        assert int(equations[-1][3]) == int(problem.answer) == problem.meta["values"][-1], problem.id
        assert int(problem.answer) <= 200


def test_the_arithmetic_is_held_out_from_training():
    """Each problem's arithmetic, in the training generator's vocabulary, replays to its answer and is
    a held-out skeleton, one no training problem has (``demo_data.held_out``)."""
    for problem in PHRASING:
        skeleton = [tuple(op) for op in problem.meta["skeleton"]]
        assert _replay(skeleton) == int(problem.answer), problem.id
        assert held_out(skeleton), problem.id
    assert not any(held_out(skeleton) for skeleton in _training_skeletons())


def _training_skeletons():
    """The training split's skeletons, read back from its given numbers for one-operation "has" problems."""
    for p in TRAIN:
        if p.meta["ops"] == 1 and re.fullmatch(r"\w+ has \d+ [\w ]+ and gets \d+ more .*", p.question):
            yield [("has", p.meta["given"][0]), ("add", p.meta["given"][1])]


def test_no_sentence_has_the_shape_of_a_training_sentence():
    training = {shape(s) for p in TRAIN + demo_problems("test", 1000, ops=(1, 2)) for s in sentences(p.question)}
    ours = collections.Counter(shape(s) for p in PHRASING for s in sentences(p.question))
    assert len(training) > 30 and len(ours) > 30  # both families are varied
    assert shape("Ann has 6 pens.") in training and shape("How many pens does Ann have now?") in training  # teeth
    assert not set(ours) & training, sorted(set(ours) & training)[:5]


def test_one_fact_per_sentence_and_names_not_pronouns():
    for problem in PHRASING:
        for sentence in sentences(problem.question):
            assert len(re.findall(r"\d+", sentence)) <= 1, sentence
            assert not re.search(r"\b(he|she|him|his|her)\b", sentence, re.IGNORECASE), sentence


def test_several_shapes_per_operation():
    firsts = collections.Counter(shape(sentences(p.question)[0]) for p in PHRASING)
    questions = collections.Counter(shape(sentences(p.question)[-1]) for p in PHRASING)
    assert len(firsts) >= 5 and len(questions) >= 8
    for cue in ("more X than N", "fewer X than N", "times as many", "twice as many", "half as many",
                "Each X holds", "How many more X", "equal piles", "went missing"):
        assert any(cue in shape(p.question) or cue in p.question for p in PHRASING), cue


def test_the_exact_step_checker_works_on_them():
    assert all(first_error(p, p.meta["reference_steps"]) is None for p in PHRASING)
    problem = next(p for p in PHRASING if "more" in p.question and "than" in p.question and p.meta["ops"] == 1)
    # "Tom owns 12 pens. Omar has 17 more pens than Tom. ..." solved by hand, then with a wrong sum
    (a, n), (total,) = problem.meta["given"], problem.meta["values"]
    right = [f"{a} + {n} = {total}.\n\n", f"The answer is \\boxed{{{total}}}."]
    assert first_error(problem, right) is None
    assert first_error(problem, [f"{a} - {n} = {a - n}.\n\n", *right[1:]]) == 0
    assert first_error(problem, [f"{a} + {n} = {total + 1}.\n\n", *right[1:]]) == 0
    assert first_error(problem, [right[0], f"The answer is \\boxed{{{total + 1}}}."]) == 1


def test_never_a_training_source():
    from evomath.config import ConfigError, ExperimentConfig, apply_overrides

    with pytest.raises(ConfigError, match="never train on it"):
        apply_overrides(ExperimentConfig(), ["data.source=demo_phrasing:1-2"])
