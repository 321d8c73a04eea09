"""Step-level beam search SBS(B1, B2), as in AlphaMath.

Each of ``beam_width`` (B1) partial solutions samples ``beam_expand`` (B2) next steps; the
value function scores every candidate and the best B1 survive. A surviving answer is a
finished beam and takes its place out of the width, so the search ends with B1 answers, or
earlier when no candidate is left, or at ``max_depth``.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence

from evomath.config import SearchConfig
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


class BeamSearch(SearchState):
    def __init__(self, tree: Tree, config: SearchConfig) -> None:
        super().__init__(tree)
        self.config = config
        self.beams: list[Node] = [tree.root]
        self.finished: list[Node] = []
        self.rng = random.Random(derive_seed(config.seed, tree.problem_id, "beam"))

    def pending(self, fill: int) -> list[Expansion]:
        if len(self.finished) >= self.config.beam_width:
            return []
        cfg, pid = self.config, self.tree.problem_id
        return [
            Expansion(leaf=b, n=cfg.beam_expand, seed=derive_seed(cfg.seed, pid, "beam", i, b.depth))
            for i, b in enumerate(self.beams)
        ]

    def absorb(self, expansions: list[Expansion]) -> None:
        """Keep the best candidates that fit in the width; dead ends never compete; ties are random."""
        candidates = [c for e in expansions for c in e.children if c.terminal in (None, "answer")]
        self.rng.shuffle(candidates)
        room = self.config.beam_width - len(self.finished)
        best = sorted(candidates, key=lambda c: -(c.prior or 0.0))[:room]
        newly_finished = [c for c in best if c.is_terminal]
        self.finished += newly_finished
        self.rollouts += len(newly_finished)
        # Evaluation picks among these, not among every scored answer in the tree.
        self.tree.meta["beam_finished"] = [n.id for n in self.finished]
        self.beams = [c for c in best if not c.is_terminal]


def beam_search(
    problems: Sequence,
    env: SearchEnv,
    *,
    on_tree_done: TreeCallback | None = None,
    progress: bool = True,
) -> tuple[list[Tree], SearchStats]:
    """SBS(``beam_width``, ``beam_expand``); candidates' scores are stored as their ``prior``.

    Without a value function every candidate ties and a seeded random choice decides, which is
    plain sampling in beam clothing: allowed, with a warning.
    """
    if env.value_fn is None:
        warnings.warn("beam search without a value_fn picks candidates at random", stacklevel=2)
    has_value = env.value_fn is not None
    expander = Expander(env, score_steps=has_value, score_answers=has_value)
    return Driver(expander, env.config, "beam", on_tree_done, progress).run(
        problems, lambda problem: BeamSearch(new_tree(problem), env.config)
    )
