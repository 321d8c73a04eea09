"""Arithmetic in natural-language steps: the equations a step states, and whether they hold.

Two readers. The demo generator's exact step checker (``evomath.demo_data.check_step``) compares
a step's numbers with the intermediate values it knows. The search's gold-free check
(``derivation_error``) is what running a step's code is for rStar-Math, for steps that carry no
code: a step is *derived* when every equation it states is true and every number it states is in
the question or was computed by an equation of an earlier step (or of this one). A false equation,
or a number that comes from nowhere (a guessed total, a miscopied fact), fails, as a failing code
step does; the final answer must be the result of one of the solution's true equations.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence

NUMBER = r"\$?\d+(?:,\d{3})*(?:\.\d+)?"
_UNITS = r"(?:\s+[A-Za-z]+){0,2}"  # "15 cookies / 5 friends = 3": up to two words after a number
EQUATION = re.compile(rf"({NUMBER}{_UNITS}(?:\s*(?:[-+*/×÷x])\s*{NUMBER}{_UNITS})+)\s*=\s*({NUMBER})")
ANY_NUMBER = re.compile(NUMBER)
ENUMERATION = re.compile(r"^\s*(?:step\s*)?\d+\s*[.):]\s+", re.IGNORECASE | re.MULTILINE)  # "1. ", "Step 2: "
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_BOXED_RESULT = re.compile(rf"=\s*\\boxed\{{\s*({NUMBER})\s*\}}")  # "30 + 9 = \boxed{39}" states 39

# Numbers a question states in words, each as the number a solution writes for it ("twice" -> 2).
NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "hundred": 100, "once": 1,
    "twice": 2, "double": 2, "doubles": 2, "half": 2, "halves": 2, "pair": 2, "pairs": 2, "thrice": 3,
    "triple": 3, "triples": 3, "third": 3, "quarter": 4, "dozen": 12, "dozens": 12,
}
_WORD = re.compile(r"[a-z]+")
# Phrases that imply a number: "gives Ann as many pencils as Ann already has" doubles what she has.
NUMBER_PHRASES = ((re.compile(r"\bas (?:many|much)\b"), 2),)


def number(text: str) -> float:
    """The value of a NUMBER match: "$1,200.50" -> 1200.5."""
    return float(text.replace("$", "").replace(",", ""))


def evaluate(expression: str) -> float | None:
    """The value of "a op b op c" (the four operations, the usual precedence), None if malformed."""
    clean = re.sub(r"[A-Za-z]{2,}", " ", expression)  # the units; "x" stays, a times sign
    clean = re.sub(r"(?<=\d)\s*[x×]\s*(?=[\d$])", " * ", clean).replace("÷", "/").replace("$", "").replace(",", "")
    try:
        tree = ast.parse(clean, mode="eval")
    except SyntaxError:
        return None
    if not all(isinstance(n, (ast.Expression, ast.BinOp, ast.Constant, ast.Add, ast.Sub, ast.Mult, ast.Div))
               for n in ast.walk(tree)):
        return None
    try:
        return float(eval(compile(tree, "<step>", "eval"), {"__builtins__": {}}))  # noqa: S307 (numbers and + - * / only)
    except ZeroDivisionError:
        return None


def question_numbers(question: str) -> set[float]:
    """Every number the question states, in digits, in words or in a phrase that implies one."""
    text = question.lower()
    found = {number(m.group()) for m in ANY_NUMBER.finditer(question)}
    found |= {float(value) for phrase, value in NUMBER_PHRASES if phrase.search(text)}
    return found | {float(NUMBER_WORDS[w]) for w in _WORD.findall(text) if w in NUMBER_WORDS}


def derivation_error(question: str, steps: Sequence[str]) -> str | None:
    """Why the last of ``steps`` is not derived (None: it is). Only the new step is judged, as rStar
    runs a new step's program and judges that step; the earlier steps' true equations add what they
    compute. The solution is read as one text, so an equation the step limit cut in two ("2 * 5 ="
    ending one step, "10 eggs" opening the next) is whole; enumerations opening a line ("2. ") are
    no numbers; a boxed answer must be the result of one of the solution's true equations (a number
    copied from the question is no answer: a question asks for what it does not state)."""
    if not steps:
        return None
    known = question_numbers(question)
    computed: set[float] = set()  # what the solution's own true equations found
    cleaned = [_BOXED.sub(" ", _BOXED_RESULT.sub(r"= \1", ENUMERATION.sub("", step))) for step in steps]
    text = "".join(cleaned)
    start = len(text) - len(cleaned[-1])  # where the new step begins
    spans = []
    for match in EQUATION.finditer(text):
        expression, stated = match.group(1), match.group(2)
        value = evaluate(expression)
        true = value is not None and abs(value - number(stated)) <= 1e-9
        if match.end() <= start:  # an earlier step's: what it computed is known, if it holds
            if true:
                known.add(number(stated))
                computed.add(number(stated))
            continue
        if not true:
            return f"false equation {expression.strip()} = {stated}"
        unknown = [m.group() for m in ANY_NUMBER.finditer(expression) if number(m.group()) not in known]
        if unknown:
            return f"{unknown[0]} in {expression.strip()} is neither in the question nor computed before"
        known.add(number(stated))
        computed.add(number(stated))
        spans.append(match.span())
    for match in ANY_NUMBER.finditer(text, start):
        if not any(a <= match.start() < b for a, b in spans) and number(match.group()) not in known:
            return f"{match.group()} is neither in the question nor computed before"
    for answer in _BOXED.findall(steps[-1]):
        if not ANY_NUMBER.fullmatch(answer.strip()) or number(answer.strip()) not in computed:
            return f"answer {answer.strip()!r} is not a number the solution computed"
    return None


def derivation_scores(items: Sequence[tuple[str, Sequence[str]]]) -> list[float]:
    """A value function (``evomath.scoring.prefix_scores``) from the check: +1 for each (question,
    steps) whose last step is derived, -1 for one that is not. A rule, not a model: it needs no
    training and no gold answer, and knows nothing of whether the reasoning fits the question."""
    return [1.0 if derivation_error(question, steps) is None else -1.0 for question, steps in items]
