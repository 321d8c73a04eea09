"""Generated arithmetic word problems for the embedded 135M model (issue 7).

GSM8K is far beyond SmolLM2-135M, but one-operation problems in plain language ("Tom has 12 pens and
gets 5 more. How many pens does Tom have now?") are solved 12% of the time per sample: enough
signal for self-evolution. Difficulty is the number of operations (1-4) over small whole numbers;
every intermediate result is a whole number of at least 2. Each problem carries reference steps in
both formats. The test split is held out by construction: a problem belongs to the test split iff
a hash of its arithmetic (operations and numbers, not names or wording) says so, so no test problem
shares its arithmetic, let alone its text, with a training problem.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from evomath.arithmetic import ANY_NUMBER, ENUMERATION, EQUATION, evaluate, number
from evomath.formats.base import StepFormat
from evomath.formats.code_cot import ANSWER, END_ANSWER, END_CODE, END_STEP, CodeFormat
from evomath.problem import Problem

MAX_VALUE = 200
TEST_SHARE = 5  # one arithmetic skeleton in 5 is held out for the test split

NAMES = [
    ("Tom", "he"), ("Ann", "she"), ("Sam", "he"), ("Lily", "she"), ("Ben", "he"), ("Mia", "she"),
    ("Max", "he"), ("Emma", "she"), ("Leo", "he"), ("Zoe", "she"), ("Jack", "he"), ("Lucy", "she"),
    ("Omar", "he"), ("Nina", "she"), ("Ravi", "he"), ("Sara", "she"),
]
PRONOUNS = {"he": ("he", "him", "his"), "she": ("she", "her", "her")}


@dataclass(frozen=True)
class Thing:
    plural: str
    var: str
    container: tuple[str, str]  # singular, plural
    gain: tuple[str, ...]  # verb phrases; {n} the amount, {x} the noun
    lose: tuple[str, ...]  # {f} a friend's name


_GOODS_GAIN = ("buys {n} more {x}", "gets {n} more {x}", "finds {n} more {x}")
_GOODS_LOSE = ("gives {n} {x} to {f}", "loses {n} {x}", "sells {n} {x}")


def _goods(plural: str, container: tuple[str, str] = ("box", "boxes")) -> Thing:
    return Thing(plural, plural.replace(" ", "_"), container, _GOODS_GAIN, _GOODS_LOSE)


THINGS = [
    _goods("pens"), _goods("pencils"), _goods("apples", ("bag", "bags")), _goods("stickers", ("pack", "packs")),
    _goods("marbles", ("bag", "bags")), _goods("cookies"), _goods("books"), _goods("toy cars"),
    _goods("shells", ("bag", "bags")), _goods("cards", ("pack", "packs")), _goods("balloons", ("bag", "bags")),
    _goods("eggs"), _goods("stamps", ("pack", "packs")), _goods("crayons"),
    Thing(
        "dollars", "dollars", ("envelope", "envelopes"),
        ("earns {n} more {x}", "gets {n} more {x}", "finds {n} more {x}"),
        ("spends {n} {x}", "gives {n} {x} to {f}", "loses {n} {x}"),
    ),
]


@dataclass
class _Story:
    """A problem being written: question sentences, reference sentences and code steps in step."""

    name: str
    pron: tuple[str, str, str]
    thing: Thing
    friend: str
    value: int
    sentences: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)  # natural-language reference steps
    code: list[tuple[str, str]] = field(default_factory=list)  # (comment, code) per code step
    skeleton: list[tuple] = field(default_factory=list)  # the arithmetic, for the split hash
    lead: str | None = None  # "Tom has 12 pens" until the first operation is written
    start_code: str = ""
    result_var: str = ""
    last_kind: str = ""
    name_next: bool = False  # after "Ann gives Tom ...", say "Tom", not "He"

    def verb(self, template: str, n: int) -> str:
        return template.format(n=n, x=self.thing.plural, f=self.friend)

    def add_step(self, subject: str | None, vp: str, result: str, code: str) -> None:
        """One operation: its question sentence, its reference sentence and its code step."""
        subj = subject or (self.name if self.name_next else self.pron[0].capitalize())
        self.name_next = subject is not None
        self.sentences.append(f"{subj} {vp}.")
        if self.lead is not None:
            opening = f"{self.lead} and {vp}" if subject is None else f"{self.lead}, and {subject} {vp}"
            self.lead = None
        else:
            opening = f"{subj} {vp}"
        self.steps.append(f"{opening}{result}")
        self.code.append((f"{opening}.", self.start_code + code))
        self.start_code = ""


def _start(rng: random.Random, story: _Story, groups: bool) -> None:
    t, name = story.thing, story.name
    if groups:
        k, m = rng.randint(2, 6), rng.randint(2, 12)
        story.value = k * m
        story.sentences.append(f"{name} has {k} {t.container[1]} with {m} {t.plural} in each {t.container[0]}.")
        story.steps.append(f"{name} has {k} {t.container[1]} with {m} {t.plural} in each, so {story.pron[0]} has {k} * {m} = {k * m} {t.plural}.")
        story.code.append((f"{name} has {k} {t.container[1]} with {m} {t.plural} in each {t.container[0]}.", f"{t.var} = {k} * {m}"))
        story.skeleton.append(("groups", k, m))
    else:
        a = rng.randint(2, 20)
        story.value = a
        story.sentences.append(f"{name} has {a} {t.plural}.")
        story.lead = f"{name} has {a} {t.plural}"
        story.start_code = f"{t.var} = {a}\n"
        story.skeleton.append(("has", a))
    story.result_var = t.var


def _operation(rng: random.Random, story: _Story, kind: str) -> bool:
    """Append one operation of this kind if the numbers allow it; False if they do not."""
    v, t, (he, _, his) = story.value, story.thing, story.pron
    x = t.plural
    if kind == "add":
        n = rng.randint(2, 20)
        if v + n > MAX_VALUE:
            return False
        vp = story.verb(rng.choice(t.gain), n)
        story.add_step(None, vp, f", so {he} has {v} + {n} = {v + n} {x}.", f"{t.var} = {t.var} + {n}")
        story.value, args = v + n, (n,)
    elif kind == "sub":
        if v < 4:
            return False
        n = rng.randint(2, v - 2)
        vp = story.verb(rng.choice(t.lose), n)
        story.add_step(None, vp, f", so {he} has {v} - {n} = {v - n} {x} left.", f"{t.var} = {t.var} - {n}")
        story.value, args = v - n, (n,)
    elif kind == "double":
        if 2 * v > MAX_VALUE:
            return False
        vp = f"gives {story.name} as many {x} as {story.name} already has"
        story.add_step(story.friend, vp, f", so {story.name} has {v} * 2 = {2 * v} {x}.", f"{t.var} = {t.var} * 2")
        story.value, args = 2 * v, ()
    elif kind == "half":
        if v % 2 or v < 4:
            return False
        vp = f"gives half of {his} {x} to {story.friend}"
        story.add_step(None, vp, f", so {he} has {v} / 2 = {v // 2} {x} left.", f"{t.var} = {t.var} // 2")
        story.value, args = v // 2, ()
    elif kind == "share":
        ks = [k for k in range(2, 10) if v % k == 0 and v // k >= 2]
        if not ks:
            return False
        k = rng.choice(ks)
        vp = f"shares {his} {x} equally among {k} friends"
        story.add_step(None, vp, f", so each friend gets {v} / {k} = {v // k} {x}.", f"each_friend = {t.var} // {k}")
        story.value, story.result_var, args = v // k, "each_friend", (k,)
    else:  # "pack": two operations, a product and a sum
        k, m = rng.randint(2, 5), rng.randint(2, 10)
        if v + k * m > MAX_VALUE:
            return False
        c1, cn = t.container
        vp = f"{'buys' if t.var != 'dollars' else 'gets'} {k} {cn} with {m} {x} in each {c1}"
        story.add_step(None, vp, f", which is {k} * {m} = {k * m} {x}.", f"new_{t.var} = {k} * {m}\n{t.var} = {t.var} + new_{t.var}")
        story.steps.append(f"So {he} has {v} + {k * m} = {v + k * m} {x}.")
        story.value, args = v + k * m, (k, m)
    story.skeleton.append((kind, *args))
    story.last_kind = kind
    return True


def _question(rng: random.Random, story: _Story) -> str:
    x, name = story.thing.plural, story.name
    if story.last_kind == "share":
        return f"How many {x} does each friend get?"
    options = [f"How many {x} does {name} have now?", f"How many {x} does {name} have in the end?"]
    if story.last_kind in ("sub", "half"):
        options.append(f"How many {x} does {name} have left?")
    return rng.choice(options)


def _write(rng: random.Random, n_ops: int) -> _Story:
    """One story with exactly n_ops arithmetic operations."""
    name, gender = rng.choice(NAMES)
    friend = rng.choice([n for n, _ in NAMES if n != name])
    story = _Story(name, PRONOUNS[gender], rng.choice(THINGS), friend, 0)
    groups = rng.random() < 0.25
    _start(rng, story, groups)
    remaining = n_ops - (1 if groups else 0)
    while remaining > 0:
        kinds = ["add", "sub", "add", "sub", "double", "half"]
        kinds += ["pack"] * (remaining >= 2) + ["share"] * (remaining == 1)
        kind = rng.choice(kinds)
        if _operation(rng, story, kind):
            remaining -= 2 if kind == "pack" else 1
    first, second = story.sentences[0], story.sentences[1] if len(story.sentences) > 1 else ""
    if not groups and second.startswith(story.pron[0].capitalize() + " ") and rng.random() < 0.5:
        story.sentences[:2] = [first[:-1] + " and " + second.split(" ", 1)[1]]  # "Tom has 12 pens and gets 5 more pens."
    return story


def true_values(skeleton: Sequence[tuple]) -> tuple[list[int], list[int]]:
    """(the numbers a solution may take from the problem, the values it computes on the way), replayed
    from the arithmetic skeleton: what the exact step checker (``check_step``) compares against.
    ``("times", k)`` (k times as many) is the phrasing family's (``evomath.demo_phrasing``) only."""
    given: list[int] = []
    values: list[int] = []
    value = 0
    for kind, *args in skeleton:
        if kind == "has":
            (value,) = args
            given.append(value)
        elif kind == "groups":
            given += args
            value = args[0] * args[1]
            values.append(value)
        elif kind in ("add", "sub"):
            given += args
            value = value + args[0] if kind == "add" else value - args[0]
            values.append(value)
        elif kind in ("double", "half"):
            given.append(2)  # "as many as he has", "half of"
            value = value * 2 if kind == "double" else value // 2
            values.append(value)
        elif kind == "share":
            given += args
            value //= args[0]
            values.append(value)
        elif kind == "times":
            given += args
            value *= args[0]
            values.append(value)
        else:  # pack: a product, then a sum
            given += args
            values += [args[0] * args[1], value + args[0] * args[1]]
            value += args[0] * args[1]
    return given, values


def _problem(story: _Story, question: str, pid: str, n_ops: int) -> Problem:
    answer = str(story.value)
    steps = story.steps + [f"The answer is \\boxed{{{answer}}}."]
    code = CodeFormat()
    program = [
        ("" if i == 0 else "\n") + f"# Step {i + 1}: {comment}\n{body}\n{END_STEP}"
        for i, (comment, body) in enumerate(story.code)
    ]
    last = f"\n# Step {len(program) + 1}: Print the final answer.\nprint({story.result_var})\n{END_CODE}"
    program.append(code.with_output(last, answer))
    program.append(f"{ANSWER}The answer is \\boxed{{{answer}}}.{END_ANSWER}")
    given, values = true_values(story.skeleton)
    meta = {"ops": n_ops, "reference_steps": steps, "reference_program": program, "given": given, "values": values}
    return Problem(pid, question, answer, meta)


def held_out(skeleton: Sequence[tuple]) -> bool:
    """Does this arithmetic (operations and numbers) belong to the held-out side? No training
    problem has a held-out skeleton, whatever its wording."""
    digest = hashlib.sha1(repr(list(skeleton)).encode()).digest()
    return digest[0] % TEST_SHARE == 0


def demo_problems(split: str, n: int, seed: int = 0, ops: tuple[int, ...] = (1, 2, 3, 4)) -> list[Problem]:
    """n problems of the split ("train" | "test"), difficulties cycling through ops; deterministic,
    and a smaller n gives a prefix of a larger one."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not ops or any(k not in (1, 2, 3, 4) for k in ops):
        raise ValueError(f"ops must be drawn from 1-4, got {ops}")
    rng = random.Random(f"evomath-demo-{split}-{seed}")

    def draw(n_ops: int, index: int) -> Problem | None:
        story = _write(rng, n_ops)
        question = " ".join(story.sentences) + " " + _question(rng, story)
        if held_out(story.skeleton) != (split == "test"):
            return None
        return _problem(story, question, f"demo_{split}-{index}", n_ops)

    return distinct_problems(n, ops, draw, f"{split} problems")


def distinct_problems(n: int, ops: Sequence[int], draw: Callable[[int, int], Problem | None], what: str
                      ) -> list[Problem]:
    """n problems with distinct questions, difficulties cycling through ``ops``: ``draw(n_ops, index)``
    writes the next candidate (None: not of this split). Every generated family shares this loop."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for _ in range(1000 * max(n, 1)):
        if len(problems) == n:
            return problems
        problem = draw(ops[len(problems) % len(ops)], len(problems))
        if problem is None or problem.question in seen:
            continue
        seen.add(problem.question)
        problems.append(problem)
    raise ValueError(f"could not generate {n} distinct {what} with ops={ops}")


def render_reference(problem: Problem, fmt: StepFormat) -> list[str]:
    """The problem's reference solution as the format's step texts (for a warm start)."""
    if fmt.name == "code":
        return list(problem.meta["reference_program"])
    if fmt.name == "natural":
        steps = problem.meta["reference_steps"]
        return [s + "\n\n" for s in steps[:-1]] + [steps[-1]]
    raise ValueError(f"no reference rendering for step format {fmt.name!r}")


# ----------------------------------------------------------------------- the exact step checker
# Natural-language steps of a policy's solution, checked against the arithmetic the generator knows
# (never used to train: it is the oracle that step-level evaluation and data audits are scored by).

def check_step(problem: Problem, step: str) -> bool:
    """Is this step of a solution to a demo problem right?

    Right means: every equation in it is true arithmetic over the problem's numbers and true values,
    whose result is a true value, and every other number it states is one of those (a restated fact
    with a wrong number is wrong). A step holding a boxed answer is right iff that is the gold answer.
    A leading enumeration ("1. ", "Step 2: ") is not a number of the solution."""
    from evomath.grading import last_boxed

    allowed = {float(v) for v in (*problem.meta["given"], *problem.meta["values"])}
    values = {float(v) for v in problem.meta["values"]}
    boxed = last_boxed(step)
    if boxed is not None:
        try:
            return number(boxed) == number(problem.answer)
        except ValueError:
            return False
    step = ENUMERATION.sub("", step)
    in_equations: list[tuple[int, int]] = []
    for match in EQUATION.finditer(step):
        result, stated = evaluate(match.group(1)), number(match.group(2))
        if result is None or abs(result - stated) > 1e-9 or stated not in values:
            return False
        in_equations.append(match.span(2))
    for match in ANY_NUMBER.finditer(step):
        if not any(a <= match.start() < b for a, b in in_equations) and number(match.group()) not in allowed:
            return False
    return True


def first_error(problem: Problem, steps: Sequence[str]) -> int | None:
    """The index of the first wrong step of a solution to a demo problem, None if every step is right
    (ProcessBench's label). A solution that ends without a boxed answer is wrong at its last step."""
    from evomath.grading import last_boxed

    if "values" not in problem.meta:
        raise ValueError(f"{problem.id}: not a generated demo problem (no known intermediate values)")
    for index, step in enumerate(steps):
        if not check_step(problem, step):
            return index
    return None if steps and last_boxed(steps[-1]) is not None else max(len(steps) - 1, 0)
