"""What a round's policy data is: how much, how long, how varied, and how much of it is right by luck.

Selection keeps a trajectory because its final answer is right; nothing checks the steps on the
way. On the demo's generated problems the exact step checker (``evomath.demo_data.first_error``)
can: a round-1 example read "A 20 apples is 18 apples ... 20 apples x 2 = 40" and was kept because
40 is right. The share of such examples is what a round teaches besides arithmetic. These numbers
are read off the SFT file as written (what the policy trains on), never used to select or train.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from evomath.demo_data import first_error
from evomath.problem import Problem
from training.trajectories import normalise


def wrong_step_before_answer(problem: Problem, steps: list[str]) -> bool | None:
    """Does some step before the last one (which holds the answer) fail the exact step checker?
    None when it cannot tell: the problem is not a generated demo problem."""
    if "values" not in problem.meta:
        return None
    index = first_error(problem, steps)
    return index is not None and index < len(steps) - 1


def sft_stats(rows: Iterable[Mapping], problems: Mapping[str, Problem], split: Callable[[str], list[str]] | None,
              count_tokens: Callable[[str], int]) -> dict:
    """``sft_examples``, ``sft_problems``, ``sft_avg_tokens`` (of the completion, by ``count_tokens``),
    ``sft_distinct_share`` (distinct normalised completions of a problem over its examples, summed
    over problems) and, when some example can be checked, ``sft_wrong_step_share`` (examples that
    reach the right answer through a wrong step, among the ``sft_checked`` ones). ``split`` turns a
    completion into the step format's steps; None when the format's steps cannot be checked (the
    checker reads natural-language arithmetic, not code)."""
    rows = list(rows)
    if not rows:
        return {"sft_examples": 0, "sft_problems": 0}
    distinct: dict[str, set[str]] = {}
    for row in rows:
        distinct.setdefault(row["problem_id"], set()).add(normalise(row["completion"]))
    stats = {
        "sft_examples": len(rows),
        "sft_problems": len(distinct),
        "sft_avg_tokens": sum(count_tokens(row["completion"]) for row in rows) / len(rows),
        "sft_distinct_share": sum(map(len, distinct.values())) / len(rows),
    }
    if split is None:
        return stats
    verdicts = [wrong_step_before_answer(problems[row["problem_id"]], split(row["completion"]))
                for row in rows if row["problem_id"] in problems]
    checked = [v for v in verdicts if v is not None]
    if checked:
        stats |= {"sft_checked": len(checked), "sft_wrong_step_share": sum(checked) / len(checked)}
    return stats
