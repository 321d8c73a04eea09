"""Choosing one answer per problem from searched trees, for every evaluation method.

Each method turns its trees into candidate `Solution`s (complete solutions with an answer) and
picks one: by vote, by PPM score (Math-Shepherd's minimum or last step score), or by walking a
saved tree (AlphaMath's offline inference). Nothing here reads the gold answer except to copy the
grading the search already did, so a choice can never peek at correctness.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from evomath.errors import InputError
from evomath.grading import vote_key
from evomath.tree import Node, Tree


@dataclass(frozen=True)
class Solution:
    answer: str
    correct: bool
    steps: int
    scores: tuple[float, ...] = ()  # PPM score of each scored step, first to last

    def score(self, agg: str = "last") -> float:
        """The solution's PPM score: its last step's, or the minimum over its steps."""
        if not self.scores:
            raise InputError("solution has no PPM scores; score the trees first")
        return min(self.scores) if agg == "min" else self.scores[-1]


@dataclass
class Choice:
    selected: Solution | None
    candidates: list[Solution]

    @property
    def any_correct(self) -> bool:
        return any(s.correct for s in self.candidates)

    @property
    def mean_steps(self) -> float:
        return sum(s.steps for s in self.candidates) / len(self.candidates) if self.candidates else 0.0


def is_answer(node: Node) -> bool:
    """A terminal that carries an answer; an answer-less ending can never be chosen."""
    return node.terminal == "answer" and node.answer is not None


def solution(tree: Tree, node: Node, override: float | None = None, step_scores: Mapping[int, float] | None = None
             ) -> Solution:
    """The trajectory ending at an answer node, with its step scores: from ``step_scores`` (node id
    -> score, a verifier's) when given, else the priors its nodes carry (the search's own)."""
    if step_scores is not None:
        scores = tuple(step_scores[n.id] for n in tree.path(node) if n.id in step_scores)
    else:
        scores = tuple(n.prior for n in tree.path(node) if n.prior is not None)
    if override is not None:
        scores = (override,)
    return Solution(node.answer, bool(node.correct), node.depth, scores)


def chains(tree: Tree) -> list[list[Node]]:
    """Best-of-N and greedy trees: each root child starts one single-path chain, in sample order."""
    out = []
    for first in tree.children(tree.root):
        chain = [first]
        while chain[-1].children:
            chain.append(tree.nodes[chain[-1].children[0]])
        out.append(chain)
    return out


def majority(solutions: Sequence[Solution], weight: Callable[[Solution], float] = lambda s: 1.0) -> Solution | None:
    """The answer with the largest total weight (answers grouped by ``vote_key``).

    Ties go to the group whose first member comes first, so callers order by preference.
    """
    totals: dict[str, float] = {}
    first: dict[str, Solution] = {}
    for s in solutions:
        key = vote_key(s.answer)
        totals[key] = totals.get(key, 0.0) + weight(s)
        first.setdefault(key, s)
    if not totals:
        return None
    best = max(totals.values())
    return next(first[k] for k in first if totals[k] == best)


def ppm_weight(agg: str) -> Callable[[Solution], float]:
    """A PPM score in [-1, 1] as a non-negative vote weight in [0, 1]."""
    return lambda s: (s.score(agg) + 1.0) / 2.0


def best_by(solutions: Sequence[Solution], key: Callable[[Solution], float]) -> Solution | None:
    """Highest key; ties go to the earliest."""
    return max(solutions, key=key, default=None)


def choose_samples(spec, tree: Tree, step_scores: Mapping[int, float] | None = None) -> Choice:
    """greedy, maj@k, pass@k, RM-bon@k, RM-vote@k: ``spec.pick`` over the first ``spec.k`` chains,
    scored by ``step_scores`` (a reward model's, node id -> score) or the nodes' priors."""
    ends = [chain[-1] for chain in chains(tree)[: spec.k]]
    candidates = [solution(tree, n, step_scores=step_scores) for n in ends if is_answer(n)]
    return Choice(spec.pick(candidates), candidates)


def choose_beam(tree: Tree) -> Choice:
    """SBS: the finished beam with the best PPM score."""
    finished = [tree.nodes[i] for i in tree.meta.get("beam_finished", [])]
    candidates = [solution(tree, n) for n in finished if is_answer(n)]
    return Choice(best_by(candidates, lambda s: s.score("last")), candidates)


def choose_mcts(spec, trees: Sequence[Tree]) -> Choice:
    """rStar: each search keeps its best answer by PPM; the top ``spec.top`` of those vote."""
    candidates, picks = [], []
    for tree in trees:
        answers = [solution(tree, n) for n in tree.answered() if is_answer(n)]
        candidates += answers
        best = best_by(answers, lambda s: s.score("last"))
        if best is not None:
            picks.append(best)
    top = sorted(picks, key=lambda s: -s.score("last"))[: spec.top]
    return Choice(majority(top), candidates)


def descend(tree: Tree, key: Callable[[Node], float | tuple]) -> Node | None:
    """AlphaMath's offline inference: from the root, follow the child with the best key among
    those with an answer below, down to an answer."""
    reaches = tree.leads_to(is_answer)
    node = tree.root
    while not is_answer(node):
        options = [c for c in tree.children(node) if reaches[c.id]]
        if not options:
            return None
        node = max(options, key=key)
    return node


OFFLINE_KEYS: dict[str, Callable[[Node], float | tuple]] = {
    "q": lambda n: n.q,
    "visits": lambda n: (n.visits, n.q),
}


def choose_offline(spec, trees: Sequence[Tree], ppm: Mapping[tuple[int, int], float] | None = None) -> Choice:
    """Re-select from saved trees. ``q``/``visits`` walk each tree and keep the best end across
    trees; a reward model takes the answer with the best score in ``ppm`` ((tree index, node id) ->
    score)."""
    candidates = [solution(t, n) for t in trees for n in t.answered() if is_answer(n)]
    if spec.select_by not in OFFLINE_KEYS:
        if ppm is None:
            raise InputError(f"offline-{spec.select_by} needs the answers' {spec.select_by} scores")
        scored = [solution(t, n, ppm[j, n.id]) for j, t in enumerate(trees) for n in t.answered() if is_answer(n)]
        return Choice(best_by(scored, lambda s: s.score("last")), candidates)
    key = OFFLINE_KEYS[spec.select_by]
    ends = [(t, n) for t in trees if (n := descend(t, key)) is not None]
    best = max(ends, key=lambda tn: key(tn[1]), default=None)
    return Choice(solution(*best) if best else None, candidates)
