"""The search engine: MCTS, step beam search, best-of-N and greedy, all returning trees.

Plain Python over a policy backend, a step format, a sandbox and a grader; no Prefect or
MLflow here. Every method batches all its problems into shared ``generate`` calls.
"""

from __future__ import annotations

from typing import Sequence

from evomath.config import SearchConfig
from evomath.search.beam import beam_search
from evomath.search.engine import SearchStats, TreeCallback, ValueFn
from evomath.search.mcts import mcts
from evomath.search.sampling import best_of_n, greedy
from evomath.tree import Tree

METHODS = ("mcts", "beam", "bon", "greedy")

__all__ = ["METHODS", "SearchStats", "ValueFn", "beam_search", "best_of_n", "greedy", "mcts", "run_search"]


def run_search(
    method: str,
    problems: Sequence,
    backend,
    fmt,
    config: SearchConfig,
    sandbox,
    grader,
    value_fn: ValueFn | None = None,
    on_tree_done: TreeCallback | None = None,
    progress: bool = True,
) -> tuple[list[Tree], SearchStats]:
    """Dispatch by name; greedy ignores ``value_fn``, best-of-N uses it to score answers."""
    common = dict(on_tree_done=on_tree_done, progress=progress)
    if method == "mcts":
        return mcts(problems, backend, fmt, config, sandbox, grader, value_fn, **common)
    if method == "beam":
        return beam_search(problems, backend, fmt, config, sandbox, grader, value_fn, **common)
    if method == "bon":
        return best_of_n(problems, backend, fmt, config, sandbox, grader, value_fn=value_fn, **common)
    if method == "greedy":
        return greedy(problems, backend, fmt, config, sandbox, grader, **common)
    raise ValueError(f"unknown search method {method!r}; choose one of {', '.join(METHODS)}")
