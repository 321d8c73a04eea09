"""A second family of arithmetic word problems, for measuring generalisation only (issue 15).

The demo trains on ``evomath.demo_data``'s sentences ("Tom has 12 pens and gets 5 more. He gives 3
pens to Ann."). A policy that learned arithmetic should also solve the same arithmetic told another
way; one that learned the generator's sentence shapes will not. These problems state one fact per
sentence, repeat names instead of pronouns, and use shapes the training generator never writes:
past tense ("Ann had 6 pens. Later, Ann found another 5 pens."), rates ("Each box holds 4 apples.
Ann filled 3 boxes."), comparisons ("Ben has 5 more pens than Ann.", "k times as many", "half as
many") and differences ("How many more pens does Ann have than Ben?"). ``tests/unit/test_demo_phrasing.py``
checks that no sentence of this family has the shape of a training sentence.

1-2 operations over small whole numbers, every intermediate value a whole number of at least 2. The
arithmetic is held out the way ``demo_test`` is (``demo_data.held_out``), so no problem here shares
its operations and numbers with a training problem. Each problem carries the numbers and true values
the exact step checker (``demo_data.first_error``) needs, and reference steps. Never used to train.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from evomath.demo_data import MAX_VALUE, NAMES, THINGS, distinct_problems, held_out, true_values
from evomath.problem import Problem

OPS = (1, 2)
GOODS = [t for t in THINGS if t.var != "dollars"]  # "two of the dollars went missing" reads oddly


@dataclass
class _Scene:
    """A problem being written: whose count the story follows, its sentences, steps and arithmetic."""

    holder: str  # whose count the question asks about
    other: str  # the next person a comparison or a gift brings in (nobody named before)
    thing: str  # plural noun
    container: tuple[str, str]
    value: int = 0
    sentences: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)  # reference steps, one equation each
    skeleton: list[tuple] = field(default_factory=list)  # in demo_data's vocabulary, for the hold-out rule
    question: str = ""

    def record(self, sentence: str, step: str, value: int, *skeleton: tuple) -> None:
        self.sentences.append(sentence)
        self.steps.append(step)
        self.value = value
        self.skeleton.extend(skeleton)

    def compared(self, rng: random.Random) -> None:
        """After "Ben has 5 more pens than Ann." the story follows Ben, and a later comparison
        brings in a third person (comparing back to Ann would contradict what was said of her)."""
        named = {self.holder, self.other}
        self.holder = self.other
        self.other = rng.choice([n for n, _ in NAMES if n not in named])


def _start(rng: random.Random, s: _Scene) -> None:
    """A plain count, one sentence ("Ann had 6 pens.")."""
    a = rng.randint(2, 20)
    x, h = s.thing, s.holder
    s.sentences.append(rng.choice([f"{h} had {a} {x}.", f"{h} owns {a} {x}.", f"{h} started with {a} {x}.",
                                   f"There are {a} {x} in {h}'s {s.container[0]}."]))
    s.value = a
    s.skeleton.append(("has", a))


def _rate(rng: random.Random, s: _Scene) -> None:
    """A rate and a count, two sentences: the first operation ("Each box holds 4 apples. Ann filled 3 boxes.")."""
    k, m = rng.randint(2, 6), rng.randint(2, 12)
    x, h, (one, many) = s.thing, s.holder, s.container
    rate = rng.choice([f"Each {one} holds {m} {x}.", f"Every {one} has room for {m} {x}."])
    count = rng.choice([f"{h} filled {k} {many}.", f"{h} bought {k} full {many}."])
    s.sentences.append(rate)
    s.record(count, f"{k} {many} with {m} {x} each make {k} * {m} = {k * m} {x}.", k * m, ("groups", k, m))


def _operation(rng: random.Random, s: _Scene, kind: str) -> bool:
    """Append one operation of this kind if the numbers allow it; False if they do not."""
    v, x, h, o = s.value, s.thing, s.holder, s.other
    if kind == "add":
        n = rng.randint(2, 20)
        if v + n > MAX_VALUE:
            return False
        sentence = rng.choice([f"Then {h} got {n} more {x}.", f"{o} gave {h} {n} {x}.",
                               f"Later, {h} found another {n} {x}.", f"{h} received {n} {x} as a gift."])
        s.record(sentence, f"{h} now has {v} + {n} = {v + n} {x}.", v + n, ("add", n))
    elif kind == "sub":
        if v < 4:
            return False
        n = rng.randint(2, v - 2)
        sentence = rng.choice([f"Then {h} gave away {n} {x}.", f"{h} lost {n} of the {x}.",
                               f"Later, {h} used {n} {x}.", f"Sadly, {n} of {h}'s {x} went missing."])
        s.record(sentence, f"{h} now has {v} - {n} = {v - n} {x}.", v - n, ("sub", n))
    elif kind in ("more_than", "fewer_than"):
        if kind == "fewer_than" and v < 4:
            return False
        more = kind == "more_than"
        n = rng.randint(2, 20) if more else rng.randint(2, v - 2)
        if more and v + n > MAX_VALUE:
            return False
        value = v + n if more else v - n
        sentence = f"{o} has {n} {'more' if more else 'fewer'} {x} than {h}."
        s.record(sentence, f"{o} has {v} {'+' if more else '-'} {n} = {value} {x}.", value, ("add" if more else "sub", n))
        s.compared(rng)
    elif kind == "twice":
        if 2 * v > MAX_VALUE:
            return False
        s.record(f"{o} has twice as many {x} as {h}.", f"{o} has {v} * 2 = {2 * v} {x}.", 2 * v, ("double",))
        s.compared(rng)
    elif kind == "half_as_many":
        if v % 2 or v < 4:
            return False
        s.record(f"{o} has half as many {x} as {h}.", f"{o} has {v} / 2 = {v // 2} {x}.", v // 2, ("half",))
        s.compared(rng)
    elif kind == "times":
        k = rng.randint(3, 5)
        if k * v > MAX_VALUE:
            return False
        s.record(f"{o} has {k} times as many {x} as {h}.", f"{o} has {v} * {k} = {k * v} {x}.", k * v, ("times", k))
        s.compared(rng)
    elif kind == "split":  # a last operation: it sets the question
        ks = [k for k in range(2, 10) if v % k == 0 and v // k >= 2]
        if not ks:
            return False
        k = rng.choice(ks)
        one, many = s.container
        sentence, s.question = rng.choice([
            (f"{h} put the {x} into {k} equal piles.", f"How many {x} are in each pile?"),
            (f"{h} packed the {x} equally into {k} {many}.", f"How many {x} went into each {one}?"),
        ])
        s.record(sentence, f"Each part gets {v} / {k} = {v // k} {x}.", v // k, ("share", k))
    else:  # "difference", a last operation: "How many more pens does Ann have than Ben?"
        if v < 4:
            return False
        b = rng.randint(2, v - 2)
        s.record(f"{o} owns {b} {x}.", f"The difference is {v} - {b} = {v - b} {x}.", v - b, ("sub", b))
        s.question = rng.choice([f"How many more {x} does {h} have than {o}?",
                                 f"How many fewer {x} does {o} have than {h}?"])
    return True


def _question(rng: random.Random, s: _Scene) -> str:
    if s.question:
        return s.question
    x, h = s.thing, s.holder
    if s.skeleton[-1][0] == "groups":
        return rng.choice([f"How many {x} are there in all?", f"What is the total number of {x}?"])
    if s.sentences[-1].startswith(f"{h} has "):  # the last sentence compared h with someone
        return rng.choice([f"How many {x} does {h} own?", f"What is the number of {x} that {h} has?"])
    return rng.choice([f"How many {x} does {h} own now?", f"What is the number of {x} that {h} has now?",
                       f"Count {h}'s {x} now. How many are there?"])


MIDDLE = ("add", "sub", "more_than", "fewer_than", "twice", "half_as_many", "times")
LAST = (*MIDDLE, "split", "difference")  # these two end the story: they set the question


def _write(rng: random.Random, n_ops: int) -> _Scene:
    """One problem with exactly n_ops operations."""
    holder = rng.choice(NAMES)[0]
    thing = rng.choice(GOODS)
    scene = _Scene(holder, rng.choice([n for n, _ in NAMES if n != holder]), thing.plural, thing.container)
    rate = rng.random() < 0.25
    if rate:
        _rate(rng, scene)
    else:
        _start(rng, scene)
    remaining = n_ops - rate
    while remaining > 0:
        if _operation(rng, scene, rng.choice(LAST if remaining == 1 else MIDDLE)):
            remaining -= 1
    return scene


def phrasing_problems(n: int, seed: int = 0, ops: tuple[int, ...] = OPS) -> list[Problem]:
    """n problems, difficulties cycling through ops (1 and 2); deterministic, and a smaller n gives a
    prefix of a larger one."""
    if not ops or any(k not in OPS for k in ops):
        raise ValueError(f"ops must be drawn from {OPS}, got {ops}")
    rng = random.Random(f"evomath-demo-phrasing-{seed}")

    def draw(n_ops: int, index: int) -> Problem | None:
        scene = _write(rng, n_ops)
        question = " ".join([*scene.sentences, _question(rng, scene)])
        if not held_out(scene.skeleton):
            return None
        given, values = true_values(scene.skeleton)
        steps = [*scene.steps, f"The answer is \\boxed{{{scene.value}}}."]
        meta = {"ops": n_ops, "family": "phrasing", "reference_steps": steps, "given": given, "values": values,
                "skeleton": [list(op) for op in scene.skeleton]}
        return Problem(f"demo_phrasing-{index}", question, str(scene.value), meta)

    return distinct_problems(n, ops, draw, "phrasing problems")
