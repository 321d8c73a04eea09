"""Difficulty buckets: the round's headline numbers, and the selection of problems for extra rollouts.

A problem is easy when every answered rollout is correct, medium when answers are mixed, hard when
none is correct. "Correct" is a success (``Tree.is_success``): a right answer after failing code
teaches nothing, so a problem solved only that way is hard and gets the extra rollouts. A tree with no answered terminal at all (every branch too deep or broken by code
errors) is hard too: the search found nothing, which is exactly what extra rollouts are for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from evomath.config import BUCKETS, Bucket
from evomath.tree import Tree


def bucket_of(tree: Tree) -> Bucket:
    outcomes = [tree.is_success(node) for node in tree.answered()]
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


def in_buckets(problems: Iterable, bucket_by_id: Mapping[str, str], wanted: Iterable[Bucket]) -> list:
    """The problems whose bucket is one of ``wanted``, in input order; a problem without a tree
    (absent from ``bucket_by_id``) is in none."""
    wanted = set(wanted)
    return [problem for problem in problems if bucket_by_id.get(problem.id) in wanted]
