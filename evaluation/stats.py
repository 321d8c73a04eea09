"""Intervals for accuracies and for differences of accuracies on the same problems.

A claim about a method holds only with its noise beside it: on 32 problems one problem is 3.1
points and a single accuracy's standard error is about 7. ``accuracy_interval`` is Wilson's score
interval (good at small n and near 0 or 1); ``paired_bootstrap`` resamples problems, keeping each
problem's pair of outcomes together, which is what "method A beats method B on the same samples" needs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

Z95 = 1.959964


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def points(self) -> str:
        """'+6.2 [+1.6, +10.9]' in percentage points."""
        return f"{100 * self.estimate:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"

    def percent(self) -> str:
        """'23.4% [19.5, 27.8]'."""
        return f"{100 * self.estimate:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}]"


def accuracy_interval(correct: Sequence[bool], z: float = Z95) -> Interval:
    """Wilson's 95% score interval of an accuracy over independent problems."""
    n = len(correct)
    if n == 0:
        return Interval(0.0, 0.0, 1.0)
    p = sum(map(bool, correct)) / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def paired_bootstrap(a: Sequence[bool], b: Sequence[bool], resamples: int = 10_000, seed: int = 0,
                     groups: Sequence[Hashable] | None = None) -> Interval:
    """The 95% percentile interval of accuracy(a) - accuracy(b), problems resampled with their pair.

    ``groups`` (one key per pair, e.g. its problem) resamples whole groups instead: several samples
    of one problem succeed or fail together, and resampling them one by one would understate the noise.
    Without it each pair is its own group."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired outcomes need equal, non-empty lengths ({len(a)} and {len(b)})")
    if groups is not None and len(groups) != len(a):
        raise ValueError(f"one group per pair: {len(groups)} groups for {len(a)} pairs")
    totals: dict[Hashable, list[int]] = {}  # per group: [sum of differences, pairs]
    for key, x, y in zip(range(len(a)) if groups is None else groups, a, b):
        total = totals.setdefault(key, [0, 0])
        total[0] += int(bool(x)) - int(bool(y))
        total[1] += 1
    sums, sizes = [t[0] for t in totals.values()], [t[1] for t in totals.values()]
    m, rng = len(sums), random.Random(seed)
    means = []
    for _ in range(resamples):
        drawn = [rng.randrange(m) for _ in range(m)]
        means.append(sum(sums[i] for i in drawn) / sum(sizes[i] for i in drawn))
    means.sort()
    return Interval(sum(sums) / len(a), means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1])
