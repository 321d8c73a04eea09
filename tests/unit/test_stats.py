"""Intervals: Wilson's for an accuracy, a paired bootstrap for a difference on the same problems."""

import pytest

from evaluation.stats import accuracy_interval, paired_bootstrap


def test_wilson_interval_matches_the_formula_and_stays_in_0_1():
    interval = accuracy_interval([True] * 20 + [False] * 80)
    assert interval.estimate == 0.2
    assert (interval.low, interval.high) == pytest.approx((0.1333, 0.2888), abs=1e-3)
    assert accuracy_interval([False] * 10).low == 0.0 and accuracy_interval([True] * 10).high == pytest.approx(1.0)


def test_paired_bootstrap_resolves_a_real_difference_and_not_noise():
    a = [True] * 60 + [False] * 40
    b = [True] * 40 + [False] * 60  # a wins on 20 more problems of 100
    assert paired_bootstrap(a, b).excludes_zero() and paired_bootstrap(a, b).estimate == pytest.approx(0.2)
    same = [i % 2 == 0 for i in range(100)]
    shifted = [i % 2 == 1 for i in range(100)]  # same accuracy, different problems
    assert not paired_bootstrap(same, shifted).excludes_zero()
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_bootstrap([True], [True, False])


def test_grouped_bootstrap_resamples_problems_not_their_samples():
    """Eight samples of a problem that all succeed or fail together are one draw's worth of evidence."""
    a = [p % 3 == 0 for p in range(40) for _ in range(8)]  # 14 of 40 problems, every sample alike
    b = [p % 4 == 0 for p in range(40) for _ in range(8)]
    problems = [p for p in range(40) for _ in range(8)]
    per_sample, grouped = paired_bootstrap(a, b), paired_bootstrap(a, b, groups=problems)
    assert grouped.estimate == per_sample.estimate
    assert grouped.high - grouped.low > 2 * (per_sample.high - per_sample.low)
    singletons = paired_bootstrap(a, b, groups=list(range(len(a))))
    assert singletons.estimate == per_sample.estimate
    assert singletons.high - singletons.low == pytest.approx(per_sample.high - per_sample.low, abs=0.02)
    with pytest.raises(ValueError, match="one group per pair"):
        paired_bootstrap(a, b, groups=problems[:-1])
