"""Evaluation methods as objects: how each one generates (which run it reads) and how it chooses.

Methods that only differ in how they pick from independent samples (maj@k, pass@k, ppm-bon@k,
ppm-vote@k) name the same generation, so one best-of-N run serves them all and "PPM best-of-8
beats majority vote" compares choices over the very same 8 samples. ``parse_method`` turns a
name into its object; everything else (the runner, the reports) asks the object, never its name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from evaluation import runs
from evaluation.runs import Context, Run
from evaluation.select import (
    Choice,
    Solution,
    best_by,
    chains,
    choose_beam,
    choose_mcts,
    choose_offline,
    choose_samples,
    majority,
    ppm_weight,
)
from evomath.errors import InputError

# rStar-Math's evaluation: 64 independent searches, a vote over the top 4 answers by PPM score.
MCTS_SEARCHES = 64
MCTS_TOP = 4

RM = "(ppm|prm|value|orm|pqm)"  # the reward-model kinds (evomath.scoring.KINDS)
GATE = f"({'|'.join(runs.GATES)})"  # the gold-free step rules (evaluation.runs.GATES)
FORMS: tuple[tuple[str, str], ...] = (
    ("greedy", "one solution at temperature 0"),
    ("maj@K", "majority vote over K samples"),
    ("pass@K", "oracle: right when any of K samples is (an upper bound, not a method)"),
    ("ppm-bon@K", "best of K samples by the PPM's score, minimum over steps (Math-Shepherd); prm-, value-, orm-, "
                  "pqm-bon@K: by that reward model's"),
    ("ppm-bon-last@K", "best of K samples by the reward model's score of the last step"),
    ("ppm+arithmetic-bon@K", "the reward model behind the arithmetic rule: its order among the samples whose every "
                             "equation holds (any of them beats any the rule stops); arithmetic-bon@K: the rule alone"),
    ("ppm-vote@K", "vote over K samples weighted by the reward model's score (minimum over steps; -last for last step; "
                   "+arithmetic and arithmetic- as for bon)"),
    ("beam-B1xB2", "step beam search SBS(B1, B2) guided by the reward model"),
    ("mcts[@S[-topT]]", f"S MCTS searches with the reward model (default {MCTS_SEARCHES}), vote over the top T "
                        f"answers by its score (default {MCTS_TOP})"),
    ("offline-q|offline-visits|offline-ppm", "re-select from saved trees by Q, by visits or by a reward model's score "
                                             "(offline-value: AlphaMath's value head, offline-prm ...)"),
)
GUIDE = "guide"  # what beam search and MCTS need: the reward model that guides the search


@dataclass(frozen=True)
class Method:
    """One evaluation method: ``kind`` is its family (the line a plot draws across k)."""

    name: str  # canonical spelling; also the records' file name
    kind: str

    @property
    def generation(self) -> str:
        """The run this method reads; methods naming the same run share it."""
        return self.kind

    @property
    def reward_model(self) -> str | None:
        """The reward model it reads: a kind (ppm, prm, ...), ``GUIDE`` (the search's own), or None."""
        return None

    @property
    def scored_by(self) -> str | None:
        """The key of the scores it reads (``Run.step_scores``, ``Run.scoring_seconds``)."""
        return self.reward_model

    @property
    def needs_ppm(self) -> bool:
        return self.reward_model is not None

    @property
    def generates(self) -> bool:
        """Does it need the policy's engine (offline re-selection only reads saved trees)?"""
        return True

    @property
    def family(self) -> str:
        return self.kind

    def generate(self, ctx: Context, group: Sequence[Method], done: dict[str, Run], saved) -> Run:
        """The run of ``self.generation`` for every method of ``group`` (they all read it)."""
        raise NotImplementedError

    def choose(self, run: Run, index: int) -> tuple[Choice, int]:
        """The method's choice on problem ``index`` of ``run`` and the tokens it spent."""
        trees = run.trees[index]
        return self.select(trees, run, index), sum(t.meta.get("tokens", 0) for t in trees)

    def select(self, trees, run: Run, index: int) -> Choice:
        raise NotImplementedError

    def cost_share(self, run: Run) -> float:
        """The share of the run's wall time this method is charged."""
        return 1.0


@dataclass(frozen=True)
class Sampled(Method):
    """Greedy, maj@k, pass@k, RM-bon@k, RM-vote@k: a choice among the first k chains of a tree."""

    k: int = 1
    agg: str = "min"  # how step scores make a solution's score: min | last
    rm: str | None = None  # the reward model bon and vote read
    gate: str | None = None  # a rule of runs.GATES in front of it (or alone, without rm)

    @property
    def scored_by(self) -> str | None:
        """The key of the step scores it reads in ``Run.step_scores``: "prm", "prm+arithmetic", "arithmetic"."""
        return "+".join(part for part in (self.rm, self.gate) if part) or None

    @property
    def select_by(self) -> str:
        return self.kind.removeprefix(f"{self.scored_by}-") if self.scored_by else self.kind

    @property
    def generation(self) -> str:
        return "greedy" if self.kind == "greedy" else "samples"

    @property
    def reward_model(self) -> str | None:
        return self.rm

    @property
    def family(self) -> str:
        return self.kind + ("-last" if self.agg == "last" else "")

    def pick(self, candidates: list[Solution]) -> Solution | None:
        if self.select_by == "pass":  # an oracle: the first right one, else the first
            return next((s for s in candidates if s.correct), candidates[0] if candidates else None)
        if self.select_by == "bon":
            return best_by(candidates, lambda s: s.score(self.agg))
        if self.select_by == "vote":
            return majority(candidates, ppm_weight(self.agg))
        return majority(candidates)  # greedy (one candidate) and maj

    def generate(self, ctx, group, done, saved) -> Run:
        if self.kind == "greedy":
            return runs.run_greedy(ctx)
        needs = {(m.rm, m.gate) for m in group if m.scored_by}
        return runs.run_samples(ctx, max(m.k for m in group), needs)

    def choose(self, run: Run, index: int) -> tuple[Choice, int]:
        tree = run.trees[index][0]
        used = chains(tree)[: self.k]
        scores = run.step_scores[self.scored_by][index] if self.scored_by else None
        return choose_samples(self, tree, scores), sum(n.num_tokens for chain in used for n in chain)

    def cost_share(self, run: Run) -> float:
        return min(self.k, run.samples) / run.samples if self.kind != "greedy" else 1.0


@dataclass(frozen=True)
class Beam(Method):
    """Step beam search SBS(B1, B2) with the PPM; the finished beam with the best score."""

    beam: tuple[int, int] = (1, 1)  # (B1, B2)

    @property
    def generation(self) -> str:
        return f"beam-{self.beam[0]}x{self.beam[1]}"

    @property
    def reward_model(self) -> str:
        return GUIDE

    def generate(self, ctx, group, done, saved) -> Run:
        return runs.run_beam(ctx, *self.beam)

    def select(self, trees, run, index) -> Choice:
        return choose_beam(trees[0])


@dataclass(frozen=True)
class MCTS(Method):
    """rStar's evaluation: ``searches`` independent searches, a vote of the top ``top`` answers."""

    searches: int = MCTS_SEARCHES
    top: int = MCTS_TOP

    @property
    def generation(self) -> str:
        return f"mcts@{self.searches}"

    @property
    def reward_model(self) -> str:
        return GUIDE

    def generate(self, ctx, group, done, saved) -> Run:
        return runs.run_mcts(ctx, self.searches)

    def select(self, trees, run, index) -> Choice:
        return choose_mcts(self, trees)


@dataclass(frozen=True)
class Offline(Method):
    """AlphaMath's offline re-selection from saved trees (or this evaluation's MCTS trees)."""

    select_by: str = "q"  # q | visits | a reward-model kind

    @property
    def reward_model(self) -> str | None:
        return None if self.select_by in ("q", "visits") else self.select_by

    @property
    def generates(self) -> bool:
        return False

    @property
    def family(self) -> str:
        return self.name

    def generate(self, ctx, group, done, saved) -> Run:
        """``saved``: (trees, where) from a file; else the first MCTS run of this evaluation."""
        if saved is None:
            first = next(name for name in done if name.startswith("mcts@"))
            saved = ([t for trees in done[first].trees for t in trees], first)
        return runs.load_offline(ctx, *saved, kinds={m.reward_model for m in group if m.reward_model})

    def select(self, trees, run, index) -> Choice:
        return choose_offline(self, trees, run.answer_scores[self.select_by][index] if self.reward_model else None)


def valid_forms() -> str:
    return "\n".join(f"  {form:38s} {what}" for form, what in FORMS)


def _error(text: str, why: str) -> InputError:
    return InputError(f"{why} {text!r}; valid methods (K, B1, B2, S, T positive integers):\n{valid_forms()}")


def _scored(rm: str | None, gate: str | None, select_by: str, agg: str | None, k: str) -> Sampled:
    """bon or vote by a reward model's step scores, a gate's, or the model's behind the gate."""
    scored_by = "+".join(part for part in (rm, gate) if part)
    kind = f"{scored_by}-{select_by}"
    return Sampled(f"{kind}{'-last' if agg == 'last' else ''}@{k}", kind, k=int(k), agg=agg or "min", rm=rm, gate=gate)


def _mcts(searches: int, top: int) -> MCTS:
    name = "mcts" if (searches, top) == (MCTS_SEARCHES, MCTS_TOP) else f"mcts@{searches}"
    if top != MCTS_TOP:
        name += f"-top{top}"
    return MCTS(name, "mcts", searches=searches, top=top)


_PATTERNS: tuple[tuple[re.Pattern, Callable[[re.Match], Method]], ...] = (
    (re.compile(r"greedy"), lambda m: Sampled("greedy", "greedy")),
    (re.compile(r"(maj|pass)@(\d+)"), lambda m: Sampled(f"{m[1]}@{m[2]}", m[1], k=int(m[2]))),
    (
        re.compile(rf"(?:{RM}\+)?{GATE}-(bon|vote)(?:-(min|last))?@(\d+)"),
        lambda m: _scored(m[1], m[2], m[3], m[4], m[5]),
    ),
    (
        re.compile(rf"{RM}-(bon|vote)(?:-(min|last))?@(\d+)"),
        lambda m: _scored(m[1], None, m[2], m[3], m[4]),
    ),
    (re.compile(r"beam-(\d+)x(\d+)"), lambda m: Beam(m[0], "beam", beam=(int(m[1]), int(m[2])))),
    (re.compile(r"mcts(?:@(\d+)(?:-top(\d+))?)?"), lambda m: _mcts(int(m[1] or MCTS_SEARCHES), int(m[2] or MCTS_TOP))),
    (re.compile(rf"offline-(q|visits|{RM[1:-1]})"), lambda m: Offline(m[0], "offline", select_by=m[1])),
)


def parse_method(text: str) -> Method:
    """A method from its name ("maj@8", "ppm-bon-last@8", "beam-3x5", "mcts@16", ...)."""
    clean = text.strip().lower()
    for pattern, build in _PATTERNS:
        match = pattern.fullmatch(clean)
        if match:
            if any(int(g) < 1 for g in match.groups() if g and g.isdigit()):
                raise _error(text, "counts must be at least 1 in")
            return build(match)
    raise _error(text, "unknown method")


def parse_methods(methods: str | Iterable[str | Method]) -> list[Method]:
    """Methods from a comma list or a sequence; duplicates (same canonical name) are dropped."""
    items = methods.split(",") if isinstance(methods, str) else list(methods)
    specs: dict[str, Method] = {}
    for item in items:
        if isinstance(item, str) and not item.strip():
            continue
        spec = item if isinstance(item, Method) else parse_method(item)
        specs.setdefault(spec.name, spec)
    if not specs:
        raise _error(str(methods), "no method in")
    return list(specs.values())
