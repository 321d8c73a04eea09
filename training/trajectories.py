"""Full trajectories read off a search tree, with the step-Q statistics both data builders rank by."""

from __future__ import annotations

import re
from dataclasses import dataclass

from evomath.tree import Node, Tree


@dataclass(frozen=True)
class Trajectory:
    leaf: Node
    steps: tuple[str, ...]
    avg_q: float  # mean Q of the steps, the root excluded
    min_q: float
    correct: bool
    code_error: bool  # some step on the path had failing code


def answered_trajectories(tree: Tree) -> list[Trajectory]:
    """One trajectory per terminal that carries a graded answer, in node order."""
    out = []
    for leaf in tree.answered():
        path = tree.path(leaf)
        qs = [node.q for node in path]
        out.append(
            Trajectory(
                leaf=leaf,
                steps=tuple(node.text for node in path),
                avg_q=sum(qs) / len(qs),
                min_q=min(qs),
                correct=bool(leaf.correct),
                code_error=any(node.code_error for node in path),
            )
        )
    return out


def rank_key(traj: Trajectory) -> tuple[float, float, int]:
    """Best first: higher average Q, then higher minimum Q, then the earlier node (deterministic)."""
    return (-traj.avg_q, -traj.min_q, traj.leaf.id)


def normalise(text: str) -> str:
    """A solution's text with case, punctuation and spacing dropped, its words, numbers and arithmetic
    kept: near-identical solutions (another full stop, a capital, a blank line) compare equal."""
    return " ".join(re.sub(r"[^0-9a-z+\-*/=]+", " ", text.lower()).split())
