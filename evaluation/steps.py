"""Step-level verification (ProcessBench) with thresholds chosen on problems the score never sees.

ProcessBench asks a verifier for the index of a solution's first wrong step, or "none": accuracy
on erroneous samples (the index is exactly right) and on correct samples (it says none), and F1,
their harmonic mean. A verifier's scores have no natural cut: a PQM or a tree-label PRM learns the
*chance of reaching the answer* from a step, which for a weak policy is low even after a right step,
so "score below 0" flags some step of every solution. ProcessBench tunes each critic's threshold;
here it is chosen by **cross-fitting**: problems are split into folds, the rule's parameter is the
one that maximises F1 on the other folds, and each fold is predicted with its own. Nothing a
sample is judged by was fit on that sample's problem.

Two rules, both reported:

- ``threshold``: the first step whose score is below tau (ProcessBench's rule for PRMs).
- ``drop``: the first step whose score falls by more than delta below the step before it (the
  first step is compared with the median first-step score of the calibration folds). A wrong step
  lowers the chance of success *relative* to where the solution stood, whatever the base rate.

``filtered_vote`` uses the same cross-fitted rule to drop the samples a verifier says go wrong
somewhere, then takes the majority among the rest (all of them if it drops every sample).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from evaluation.select import Solution, majority

RULES = ("threshold", "drop")


@dataclass(frozen=True)
class StepCase:
    """One answered sample: its problem, a verifier's score of each step, the true first wrong step."""

    problem_id: str
    scores: tuple[float, ...]
    first_error: int | None  # None: every step right


@dataclass(frozen=True)
class Rule:
    name: str  # one of RULES
    cut: float  # tau for threshold, delta for drop
    start: float = 0.0  # drop: what the first step is compared with

    def first_error(self, scores: Sequence[float]) -> int | None:
        """The predicted index of the first wrong step, None if the rule flags none."""
        if self.name == "threshold":
            return next((j for j, s in enumerate(scores) if s < self.cut), None)
        previous = self.start
        for j, s in enumerate(scores):
            if s < previous - self.cut:
                return j
            previous = s
        return None

    def predict(self, case: StepCase) -> int | None:
        return self.first_error(case.scores)


@dataclass(frozen=True)
class StepScore:
    f1: float
    erroneous_accuracy: float
    correct_accuracy: float
    erroneous_samples: int
    correct_samples: int


def step_score(cases: Sequence[StepCase], predict: Callable[[StepCase], int | None]) -> StepScore:
    """ProcessBench's accuracies and F1 of ``predict`` on ``cases``."""
    erroneous = [c for c in cases if c.first_error is not None]
    correct = [c for c in cases if c.first_error is None]
    acc_err = sum(predict(c) == c.first_error for c in erroneous) / len(erroneous) if erroneous else 0.0
    acc_ok = sum(predict(c) is None for c in correct) / len(correct) if correct else 0.0
    f1 = 2 * acc_err * acc_ok / (acc_err + acc_ok) if acc_err + acc_ok else 0.0
    return StepScore(f1, acc_err, acc_ok, len(erroneous), len(correct))


def candidate_rules(cases: Sequence[StepCase], name: str, grid: int = 41) -> list[Rule]:
    """The rules worth trying on ``cases``: cuts at quantiles of the scores (or of their drops)."""
    if name == "threshold":
        values = sorted(s for c in cases for s in c.scores)
        start = 0.0
    else:
        firsts = [c.scores[0] for c in cases if c.scores]
        start = statistics.median(firsts) if firsts else 0.0
        values = sorted(max(0.0, (c.scores[j - 1] if j else start) - c.scores[j]) for c in cases
                        for j in range(len(c.scores)))
    if not values:
        return [Rule(name, 0.0, start)]
    cuts = sorted({values[min(len(values) - 1, round(q * (len(values) - 1) / (grid - 1)))] for q in range(grid)})
    if name == "threshold":  # between quantiles, and one above every score (flag every sample)
        cuts = sorted(set(cuts) | {values[-1] + 1e-6} | {min(cuts) - 1e-6})
    else:  # a drop must exceed the cut: 0 flags any fall, just above the largest flags none
        cuts = sorted(set(cuts) | {values[-1] + 1e-6})
    return [Rule(name, cut, start) for cut in cuts]


def fit_rule(cases: Sequence[StepCase], name: str) -> Rule:
    """The rule of that family with the best F1 on ``cases`` (ties: the first, i.e. the smallest cut)."""
    return max(candidate_rules(cases, name), key=lambda r: step_score(cases, r.predict).f1)


def folds_by_problem(problem_ids: Sequence[str], folds: int, seed: int) -> dict[str, int]:
    """Each problem's fold: problems shuffled with ``seed`` and dealt round-robin."""
    unique = sorted(set(problem_ids))
    random.Random(seed).shuffle(unique)
    return {p: i % folds for i, p in enumerate(unique)}


def cross_fitted_rules(cases: Sequence[StepCase], name: str, folds: int = 2, seed: int = 0) -> dict[str, Rule]:
    """Problem id -> the rule fit on the other folds' cases."""
    fold_of = folds_by_problem([c.problem_id for c in cases], folds, seed)
    fitted = {f: fit_rule([c for c in cases if fold_of[c.problem_id] != f], name) for f in range(folds)}
    return {p: fitted[f] for p, f in fold_of.items()}


def cross_fitted_score(cases: Sequence[StepCase], name: str, folds: int = 2, seed: int = 0
                       ) -> tuple[StepScore, list[Rule]]:
    """ProcessBench's F1 of the cross-fitted rule, and the rule each fold used."""
    rules = cross_fitted_rules(cases, name, folds, seed)
    score = step_score(cases, lambda c: rules[c.problem_id].predict(c))
    return score, list(dict.fromkeys(rules.values()))


def filtered_vote(solutions: Sequence[Solution], rule: Rule) -> Solution | None:
    """Majority among the solutions ``rule`` flags no step of; among all if it flags every one."""
    kept = [s for s in solutions if rule.first_error(s.scores) is None]
    return majority(kept or solutions)
