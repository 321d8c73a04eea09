"""The search engine: MCTS, step beam search, best-of-N and greedy, all returning trees.

Plain Python over a ``SearchEnv`` (policy backend, step format, settings, sandbox, grader, value
function); no Prefect or MLflow here. Every method batches all its problems into shared ``generate`` calls.
"""

from __future__ import annotations

from collections.abc import Sequence

from evomath.errors import InputError
from evomath.search.beam import beam_search
from evomath.search.engine import SearchEnv, SearchStats, TreeCallback, ValueFn
from evomath.search.mcts import mcts
from evomath.search.sampling import best_of_n, greedy
from evomath.tree import Tree

SEARCHES = {"mcts": mcts, "beam": beam_search, "bon": best_of_n, "greedy": greedy}
METHODS = tuple(SEARCHES)

__all__ = ["METHODS", "SearchEnv", "SearchStats", "ValueFn", "beam_search", "best_of_n", "greedy", "mcts",
           "run_search"]


def run_search(
    method: str,
    problems: Sequence,
    env: SearchEnv,
    on_tree_done: TreeCallback | None = None,
    progress: bool = True,
) -> tuple[list[Tree], SearchStats]:
    """Dispatch by name; greedy ignores ``env.value_fn``, best-of-N uses it to score answers."""
    if method not in SEARCHES:
        raise InputError(f"unknown search method {method!r}; choose one of {', '.join(METHODS)}")
    return SEARCHES[method](problems, env, on_tree_done=on_tree_done, progress=progress)
