"""Independent sampling: best-of-N and greedy decoding, as trees.

Solutions are sampled step by step, so code steps are executed exactly as in MCTS and both step
formats share one path: the root is expanded once with ``n`` samples (one request, shared
prefix, duplicates kept: they are independent samples), then every unfinished chain advances
one step per batch, all chains of all problems together.
"""

from __future__ import annotations

from typing import Sequence

from evomath.config import SearchConfig
from evomath.search.engine import (
    Driver,
    Expander,
    Expansion,
    SearchState,
    SearchStats,
    TreeCallback,
    ValueFn,
    derive_seed,
    new_tree,
)
from evomath.tree import Node, Tree


class Chains(SearchState):
    """``n`` single-path branches below the root."""

    def __init__(self, tree: Tree, n: int, seed: int) -> None:
        super().__init__(tree)
        self.n, self.seed = n, seed
        self.leaves: dict[int, Node] | None = None  # chain -> its unfinished last step

    def pending(self, fill: int) -> list[Expansion]:
        pid = self.tree.problem_id
        if self.leaves is None:
            return [Expansion(self.tree.root, self.n, derive_seed(self.seed, pid, "root"), dedupe=False)]
        return [
            Expansion(leaf, 1, derive_seed(self.seed, pid, chain, leaf.depth), key=chain)
            for chain, leaf in self.leaves.items()
        ]

    def absorb(self, expansions: list[Expansion]) -> None:
        if self.leaves is None:
            steps = dict(enumerate(expansions[0].children))
        else:
            steps = {e.key: e.children[0] for e in expansions}
        self.leaves = {chain: node for chain, node in steps.items() if not node.is_terminal}
        self.rollouts += len(steps) - len(self.leaves)


def _sample(problems, backend, fmt, config, sandbox, grader, *, n, temperature, method, value_fn,
            on_tree_done, progress) -> tuple[list[Tree], SearchStats]:
    expander = Expander(
        backend, fmt, config, sandbox, grader, value_fn, temperature=temperature,
        score_answers=value_fn is not None,
    )
    return Driver(expander, config, method, on_tree_done, progress).run(
        problems, lambda problem: Chains(new_tree(problem), n, config.seed)
    )


def best_of_n(
    problems: Sequence,
    backend,
    fmt,
    config: SearchConfig,
    sandbox,
    grader,
    n: int | None = None,
    value_fn: ValueFn | None = None,
    on_tree_done: TreeCallback | None = None,
    progress: bool = True,
) -> tuple[list[Tree], SearchStats]:
    """``n`` (default ``config.n_samples``) solutions per problem at ``config.temperature``.

    With a value function each answer's score is stored as its ``prior`` (PPM best-of-N).
    """
    return _sample(problems, backend, fmt, config, sandbox, grader, n=n or config.n_samples,
                   temperature=config.temperature, method="bon", value_fn=value_fn,
                   on_tree_done=on_tree_done, progress=progress)


def greedy(
    problems: Sequence,
    backend,
    fmt,
    config: SearchConfig,
    sandbox,
    grader,
    on_tree_done: TreeCallback | None = None,
    progress: bool = True,
) -> tuple[list[Tree], SearchStats]:
    """One solution per problem at temperature 0."""
    return _sample(problems, backend, fmt, config, sandbox, grader, n=1, temperature=0.0,
                   method="greedy", value_fn=None, on_tree_done=on_tree_done, progress=progress)
