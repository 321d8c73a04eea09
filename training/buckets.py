"""Difficulty buckets: the round's headline numbers, and the selection of problems for extra rollouts.

A problem is easy when every answered rollout is correct, medium when answers are mixed, hard when
none is correct. A tree with no answered terminal at all (every branch too deep or broken by code
errors) is hard too: the search found nothing, which is exactly what extra rollouts are for.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Literal

from evomath.tree import Tree

Bucket = Literal["easy", "medium", "hard"]
BUCKETS: tuple[Bucket, ...] = ("easy", "medium", "hard")


def bucket_of(tree: Tree) -> Bucket:
    outcomes = [bool(node.correct) for node in tree.answered()]
    if not any(outcomes):
        return "hard"
    return "easy" if all(outcomes) else "medium"


def bucket_counts(trees: Iterable[Tree]) -> dict[str, int]:
    """Problems per bucket, every bucket present (zeros included) so rounds tabulate side by side."""
    counts = Counter(bucket_of(tree) for tree in trees)
    return {bucket: counts[bucket] for bucket in BUCKETS}


def hard_problem_ids(trees: Iterable[Tree]) -> list[str]:
    """Problems that get extra rollouts, in input order."""
    return [tree.problem_id for tree in trees if bucket_of(tree) == "hard"]
