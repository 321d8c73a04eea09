"""ProcessBench scoring with cross-fitted step rules (evaluation/steps.py)."""

from evaluation.select import Solution
from evaluation.steps import (
    Rule,
    StepCase,
    candidate_rules,
    cross_fitted_rules,
    cross_fitted_score,
    filtered_vote,
    fit_rule,
    folds_by_problem,
    step_score,
)


def test_threshold_rule_flags_the_first_step_below_the_cut():
    rule = Rule("threshold", 0.3)
    assert rule.first_error([0.9, 0.5, 0.2, 0.1]) == 2
    assert rule.first_error([0.9, 0.5]) is None
    assert rule.first_error([]) is None


def test_drop_rule_compares_each_step_with_the_one_before():
    rule = Rule("drop", 0.2, start=0.5)
    assert rule.first_error([0.4, 0.35, 0.1]) == 2  # 0.35 -> 0.1 falls 0.25
    assert rule.first_error([0.2, 0.2]) == 0  # 0.5 -> 0.2 at the first step
    assert rule.first_error([0.45, 0.3, 0.15]) is None  # falls of 0.15 only
    assert rule.first_error([-0.9, -0.9]) == 0


def test_step_score_is_processbench_f1():
    cases = [StepCase("a", (0.9, 0.1), 1), StepCase("b", (0.9, 0.9), None), StepCase("c", (0.1, 0.9), 1),
             StepCase("d", (0.2,), None)]
    s = step_score(cases, Rule("threshold", 0.5).predict)
    assert (s.erroneous_samples, s.correct_samples) == (2, 2)
    assert s.erroneous_accuracy == 0.5  # "a" right at step 1; "c" flagged at step 0, truth 1
    assert s.correct_accuracy == 0.5  # "b" none; "d" flagged
    assert s.f1 == 0.5


def test_fit_rule_finds_the_cut_that_separates_right_from_wrong_steps():
    # A weak policy's verifier: every score is below 0, wrong steps lower still.
    cases = [StepCase(f"p{i}", (-0.3, -0.35, -0.8), 2) for i in range(5)]
    cases += [StepCase(f"q{i}", (-0.3, -0.4), None) for i in range(5)]
    assert step_score(cases, Rule("threshold", 0.0).predict).f1 == 0.0
    fitted = fit_rule(cases, "threshold")
    assert -0.8 < fitted.cut <= -0.4
    assert step_score(cases, fitted.predict).f1 == 1.0
    drop = fit_rule(cases, "drop")
    assert step_score(cases, drop.predict).f1 == 1.0


def test_candidate_rules_include_flag_everything_and_flag_nothing():
    cases = [StepCase("a", (0.1, 0.2), None), StepCase("b", (0.5, -0.4), 1), StepCase("c", (0.3, 0.0), None)]
    for family in ("threshold", "drop"):
        predictions = [[r.predict(c) for c in cases] for r in candidate_rules(cases, family)]
        assert [None, None, None] in predictions  # a cut that flags nothing
    thresholds = [[r.predict(c) for c in cases] for r in candidate_rules(cases, "threshold")]
    assert [0, 0, 0] in thresholds  # and one that flags every first step


def test_folds_split_problems_not_samples():
    ids = ["a", "a", "b", "c", "c", "d"]
    fold = folds_by_problem(ids, 2, seed=0)
    assert set(fold) == {"a", "b", "c", "d"} and sorted(fold.values()) == [0, 0, 1, 1]
    assert fold == folds_by_problem(list(reversed(ids)), 2, seed=0)


def test_each_problem_is_judged_by_a_rule_fit_on_the_other_fold():
    cases = [StepCase(f"p{i}", (-0.3, -0.9 if i % 2 else -0.35), 1 if i % 2 else None) for i in range(12)]
    rules = cross_fitted_rules(cases, "threshold", folds=2, seed=3)
    fold = folds_by_problem([c.problem_id for c in cases], 2, seed=3)
    for f in (0, 1):
        expected = fit_rule([c for c in cases if fold[c.problem_id] != f], "threshold")
        assert all(rules[p] == expected for p, g in fold.items() if g == f)
    score, used = cross_fitted_score(cases, "threshold", folds=2, seed=3)
    assert score.f1 == 1.0 and 1 <= len(used) <= 2


def test_filtered_vote_drops_flagged_samples_and_falls_back_to_all():
    rule = Rule("threshold", 0.0)
    flagged = [Solution("3", False, 2, (0.5, -0.5)), Solution("3", False, 2, (-0.1,))]
    kept = [Solution("5", True, 2, (0.4, 0.2))]
    assert filtered_vote(flagged + kept, rule).answer == "5"  # plain majority would say 3
    assert filtered_vote(flagged, rule).answer == "3"
    assert filtered_vote([], rule) is None
