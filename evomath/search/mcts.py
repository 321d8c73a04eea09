"""rStar-Math's MCTS, many trees at once.

A rollout selects by UCT from the root down to an unexpanded leaf, expands it with
``n_candidates`` steps in one request, then keeps going from the best new child until a
expansion yields only terminals. Answers back their +1/-1 up to the root the moment they are
created (rStar's ``update_recursive``); dead ends keep -1 to themselves; a node whose children
are all terminal or dead is never selected again. Every tree contributes its pending expansion
to one shared batch per step, so the engine sees ``concurrent_problems`` requests at a time.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from evomath.config import SearchConfig
from evomath.errors import InputError
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


def uct(child: Node, parent_visits: int, c_puct: float, unvisited_bonus: float | None, virtual: int = 0) -> float:
    """Q + c*sqrt(ln N_parent / N_child).

    A prior counts as one visit with its value, as rStar's ``node.update(ppm_score)`` does. An
    unvisited child scores ``unvisited_bonus`` (rStar: 0, so the best Q is followed first;
    None: +inf, classic UCT). ``virtual`` in-flight rollouts through the child count as losses.
    """
    n = child.visits + (child.prior is not None) + virtual
    if n == 0:
        return math.inf if unvisited_bonus is None else unvisited_bonus
    q = (child.value_sum + (child.prior or 0.0) - virtual) / n
    explore = c_puct * math.sqrt(math.log(parent_visits) / n) if parent_visits > 1 else 0.0
    return q + explore


def puct(child: Node, parent_visits: int, c_puct: float, siblings: int, virtual: int = 0) -> float:
    """AlphaMath's Q + c * P * sqrt(N_parent) / (1 + N_child), P the child's policy prior (uniform
    over the siblings without one); an unvisited child's Q is 0."""
    n = child.visits + (child.prior is not None) + virtual
    q = (child.value_sum + (child.prior or 0.0) - virtual) / n if n else 0.0
    p = child.policy_prior if child.policy_prior is not None else 1.0 / max(siblings, 1)
    return q + c_puct * p * math.sqrt(max(parent_visits, 1)) / (1 + n)


@dataclass(eq=False)
class _Rollout:
    index: int
    leaf: Node
    path: list[int] = field(default_factory=list)  # root .. leaf, carrying the virtual loss


class TreeSearch(SearchState):
    """One problem's MCTS: its selection rule, its in-flight rollouts, its budget."""

    def __init__(self, tree: Tree, config: SearchConfig, parallel_rollouts: int | None = 1) -> None:
        super().__init__(tree)
        self.config = config
        self.parallel = parallel_rollouts
        self.next_index = tree.meta.get("rollouts", 0)  # a continued tree keeps counting
        self.limit = self.next_index + config.rollouts
        self.inflight: list[_Rollout] = []
        self.virtual: Counter[int] = Counter()
        self.busy: set[int] = set()  # leaves being expanded
        self.dead: set[int] = set()  # expanded nodes with nothing selectable below

    def pending(self, fill: int) -> list[Expansion]:
        room = fill if self.parallel is None else self.parallel
        while len(self.inflight) < room and self.next_index < self.limit:
            leaf = self.select_leaf()
            if leaf is None:
                break
            self._claim(_Rollout(self.next_index, leaf, [n.id for n in [self.tree.root, *self.tree.path(leaf)]]))
            self.next_index += 1
        return [
            Expansion(
                leaf=r.leaf,
                n=self.config.n_candidates,
                seed=derive_seed(self.config.seed, self.tree.problem_id, r.index, r.leaf.depth),
                key=r,
            )
            for r in self.inflight
        ]

    def absorb(self, expansions: list[Expansion]) -> None:
        for exp in expansions:
            rollout: _Rollout = exp.key
            self._release(rollout)
            options = [c for c in exp.children if not c.is_terminal]
            if options and self.config.simulation == "rollout":
                rollout.leaf = self.ranked(rollout.leaf, options)[0]
                rollout.path.append(rollout.leaf.id)
                self._claim(rollout)
            else:  # a terminal reached, or (AlphaMath) the simulation's one expansion done
                if not options:
                    self.dead.add(rollout.leaf.id)
                self.inflight.remove(rollout)
                self.rollouts += 1

    def select_leaf(self, node: Node | None = None) -> Node | None:
        """Best unexpanded, non-terminal leaf below ``node`` (the root), or None.

        Descends by UCT; where a subtree holds only leaves other rollouts are expanding, it
        tries the next child. Subtrees with nothing left are remembered as dead.
        """
        node = node or self.tree.root
        if not node.children:
            return None if node.id in self.busy else node
        options = [c for c in self.tree.children(node) if not c.is_terminal and c.id not in self.dead]
        for child in self.ranked(node, options):
            leaf = self.select_leaf(child)
            if leaf is not None:
                return leaf
        if all(c.id in self.dead for c in options):
            self.dead.add(node.id)
        return None

    def ranked(self, parent: Node, children: Sequence[Node]) -> list[Node]:
        """Children by UCT (rStar) or PUCT (AlphaMath), best first; ties keep sampling order (rStar
        takes the first)."""
        n_parent = parent.visits + (parent.prior is not None) + self.virtual[parent.id]
        cfg = self.config
        if cfg.selection == "puct":
            siblings = len(parent.children)
            scores = {c.id: puct(c, n_parent, cfg.c_puct, siblings, self.virtual[c.id]) for c in children}
        else:
            scores = {c.id: uct(c, n_parent, cfg.c_puct, cfg.unvisited_bonus, self.virtual[c.id]) for c in children}
        return sorted(children, key=lambda c: -scores[c.id])

    def _claim(self, rollout: _Rollout) -> None:
        self.busy.add(rollout.leaf.id)
        self.virtual.update(rollout.path)
        if rollout not in self.inflight:
            self.inflight.append(rollout)

    def _release(self, rollout: _Rollout) -> None:
        """Undo the rollout's virtual loss, so it does not steer its own next choice."""
        self.busy.discard(rollout.leaf.id)
        self.virtual.subtract(rollout.path)


def mcts(
    problems: Sequence,
    env: SearchEnv,
    *,
    on_tree_done: TreeCallback | None = None,
    progress: bool = True,
    trees: Sequence[Tree] | None = None,
    reward: Literal["gold", "value"] = "gold",
    parallel_rollouts: int | None = 1,
) -> tuple[list[Tree], SearchStats]:
    """Run ``env.config.rollouts`` rollouts per problem; returns trees in problem order.

    ``trees``: earlier trees of some of these problems, continued in place (extra rollouts for
    hard problems; pass a new ``config.seed`` for new samples). ``reward="value"``: the
    value function scores answers instead of the gold answer (evaluation). ``parallel_rollouts``:
    rollouts in flight per tree (1 = rStar; k > 1 with virtual loss; None = as many as fill the
    batch when fewer than ``concurrent_problems`` problems remain).
    """
    existing = {t.problem_id: t for t in trees or ()}
    unknown = set(existing) - {p.id for p in problems}
    if unknown:
        raise InputError(f"trees without a matching problem: {sorted(unknown)[:5]}")
    expander = Expander(env, score_steps=env.value_fn is not None, reward=reward)

    def start(problem) -> TreeSearch:
        return TreeSearch(existing.get(problem.id) or new_tree(problem), env.config, parallel_rollouts)

    return Driver(expander, env.config, "mcts", on_tree_done, progress).run(problems, start)
