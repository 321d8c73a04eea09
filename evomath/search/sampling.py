"""Independent sampling: best-of-N and greedy decoding, as trees.

Solutions are sampled step by step, so code steps are executed exactly as in MCTS and both step
formats share one path: the root is expanded once with ``n`` samples (one request, shared
prefix, duplicates kept: they are independent samples), then every unfinished chain advances
one step per batch, all chains of all problems together. With ``whole_solutions`` (natural steps)
each request decodes the rest of the solution and is split into steps afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from evomath.search.engine import (
    Driver,
    Expander,
    Expansion,
    SearchEnv,
    SearchState,
    SearchStats,
    TreeCallback,
    derive_seed,
    new_tree,
)
from evomath.tree import Node, Tree


class Chains(SearchState):
    """``n`` single-path branches below each node of ``starts`` (default: the root): independent
    samples of a whole solution, or (Math-Shepherd's completer) of its continuations from a prefix.
    ``whole``: each request writes the rest of its chain where the format allows (Expansion.whole).
    The chains are independent: each advances as soon as its own last request is back."""

    independent = True

    def __init__(self, tree: Tree, n: int, seed: int, starts: Sequence[Node] | None = None, whole: bool = False) -> None:
        super().__init__(tree)
        self.n, self.seed, self.whole = n, seed, whole
        starts = list(starts) if starts is not None else [tree.root]
        self.unstarted = [start for start in starts if not start.is_terminal]
        self.firsts: set[Expansion] = set()  # on the engine: the n first steps below a start
        self.open: dict = {}  # chain -> its unfinished last step, not on the engine

    def _key(self, start: Node, i: int):
        return i if start.parent is None else (start.id, i)  # chains below the root keep their plain numbers

    def pending(self, fill: int) -> list[Expansion]:
        pid = self.tree.problem_id
        firsts = [
            Expansion(start, self.n, derive_seed(self.seed, pid, "root" if start.parent is None else f"from{start.id}"),
                      key=start, dedupe=False, whole=self.whole)
            for start in self.unstarted
        ]
        later = [
            Expansion(leaf, 1, derive_seed(self.seed, pid, chain, leaf.depth), key=chain, whole=self.whole)
            for chain, leaf in self.open.items()
        ]
        self.firsts.update(firsts)
        self.unstarted, self.open = [], {}
        return firsts + later

    def absorb(self, expansions: list[Expansion]) -> None:
        for e in expansions:
            if e in self.firsts:
                self.firsts.discard(e)
                steps = {self._key(e.key, i): child for i, child in enumerate(e.children)}
            else:
                steps = {e.key: e.children[0]}
            for chain, node in steps.items():
                end = self._end(node)
                if end.is_terminal:
                    self.rollouts += 1
                else:
                    self.open[chain] = end

    def _end(self, node: Node) -> Node:
        """The last of the steps one request wrote below the chain (they form a single path)."""
        while node.children:
            node = self.tree.nodes[node.children[-1]]
        return node


def _sample(problems, env: SearchEnv, *, n, temperature, method, score, on_tree_done, progress):
    expander = Expander(env, temperature=temperature, score_answers=score)
    return Driver(expander, env.config, method, on_tree_done, progress).run(
        problems, lambda problem: Chains(new_tree(problem), n, env.config.seed, whole=env.config.whole_solutions)
    )


def best_of_n(
    problems: Sequence,
    env: SearchEnv,
    n: int | None = None,
    *,
    on_tree_done: TreeCallback | None = None,
    progress: bool = True,
) -> tuple[list[Tree], SearchStats]:
    """``n`` (default ``config.n_samples``) solutions per problem at ``config.temperature``.

    With a value function each answer's score is stored as its ``prior`` (PPM best-of-N).
    """
    return _sample(problems, env, n=n or env.config.n_samples, temperature=env.config.temperature, method="bon",
                   score=env.value_fn is not None, on_tree_done=on_tree_done, progress=progress)


def greedy(
    problems: Sequence,
    env: SearchEnv,
    *,
    on_tree_done: TreeCallback | None = None,
    progress: bool = True,
) -> tuple[list[Tree], SearchStats]:
    """One solution per problem at temperature 0 (the value function, if any, is not used)."""
    return _sample(problems, replace(env, value_fn=None), n=1, temperature=0.0, method="greedy", score=False,
                   on_tree_done=on_tree_done, progress=progress)
