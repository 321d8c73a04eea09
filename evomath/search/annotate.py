"""Math-Shepherd's automatic process annotation (Wang et al. 2024), batched on the engine.

For each step of a sampled solution, a *completer* (the policy) samples N continuations from the
solution so far; the step's **hard** estimate is 1 if any continuation reaches the gold answer, its
**soft** estimate the fraction that do. The final step's label is whether the solution itself is
right (a success: the gold answer, no failing code).

Everything goes through the search engine: the solutions are best-of-N samples, and the
continuations are ``Chains`` grown from every prefix node of every solution at once, so the engine
carries the N continuations of many prefixes together; they share their prefix's tokens (vLLM's
prefix cache), and the prefixes of one solution share each other's. In a format whose steps run no
code (natural language) each continuation is one request decoded to its end and split into steps
(Math-Shepherd's completer; ``Expander.steps_per_request``), not one request per step; code steps
run in the sandbox between requests and answers are graded exactly as in MCTS.

A record (one per solution): problem_id, question, gold, steps, hard, soft, answer, correct,
completions, format, and the annotation key it was made under.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from evomath.search.engine import Driver, Expander, SearchEnv, SearchStats
from evomath.search.sampling import Chains, best_of_n
from evomath.tree import Node, Tree


def chain_from(tree: Tree, first: Node) -> list[Node]:
    """The single-path chain that starts at ``first`` (a sampled solution or a continuation)."""
    chain = [first]
    while chain[-1].children:
        chain.append(tree.nodes[chain[-1].children[0]])
    return chain


def solution_chains(tree: Tree) -> list[list[Node]]:
    """The sampled solutions of a best-of-N tree (one per root child), before any continuation."""
    return [chain_from(tree, tree.nodes[i]) for i in tree.root.children]


def estimates(tree: Tree, chain: list[Node], first_new: dict[int, int]) -> tuple[list[float], list[float]]:
    """(hard, soft) per step of ``chain``: from the continuations grown below each step (children
    from index ``first_new[node]`` on), the last step from the solution's own outcome."""
    hard, soft = [], []
    for node in chain[:-1]:
        ends = [chain_from(tree, tree.nodes[i])[-1] for i in node.children[first_new[node.id]:]]
        right = [tree.is_success(end) for end in ends]
        soft.append(sum(right) / len(right) if right else 0.0)
        hard.append(float(any(right)))
    outcome = float(tree.is_success(chain[-1]))
    return [*hard, outcome], [*soft, outcome]


def annotate_solutions(
    solutions: Sequence[tuple[Tree, list[Node]]],
    env: SearchEnv,
    completions: int,
    progress: bool = True,
    one_request: bool = True,
) -> tuple[list[dict], SearchStats]:
    """The completer on given solutions (a tree and the path of one of its answered trajectories:
    say, a round's MCTS trees): ``completions`` continuations from every step but the last, a step
    that several solutions share completed once. The trees grow in memory only. ``one_request``:
    each continuation in one request where the format allows (False: step by step, as MCTS grows)."""
    from evomath.problem import Problem

    by_tree: dict[str, tuple[Tree, list[list[Node]]]] = {}
    for tree, path in solutions:
        by_tree.setdefault(tree.problem_id, (tree, []))[1].append(path)
    first_new = {pid: {n.id: len(n.children) for path in paths for n in path} for pid, (_, paths) in by_tree.items()}
    records: list[dict] = []

    def start(problem) -> Chains:
        tree, paths = by_tree[problem.id]
        starts = list({n.id: n for path in paths for n in path[:-1]}.values())
        return Chains(tree, completions, env.config.seed + 1, starts, whole=one_request)

    def done(tree: Tree) -> None:
        records.extend(_record(tree, path, first_new[tree.problem_id], completions, env)
                       for path in by_tree[tree.problem_id][1])

    problems = [Problem(tree.problem_id, tree.question, tree.gold) for tree, _ in by_tree.values()]
    _, stats = Driver(Expander(env), env.config, "completer", done, progress).run(problems, start)
    return records, stats


def annotate(
    problems: Sequence,
    env: SearchEnv,
    *,
    samples: int,
    completions: int,
    on_problem_done: Callable[[list[dict]], None] | None = None,
    progress: bool = True,
    one_request: bool = True,
) -> tuple[list[dict], SearchStats, SearchStats]:
    """Sample ``samples`` solutions per problem, then ``completions`` continuations from each of
    their steps; returns the records (in problem order), and the sampling's and the completer's
    engine statistics. ``on_problem_done`` gets each problem's records as soon as they exist.
    ``one_request``: as in `annotate_solutions`."""
    trees, sampling = best_of_n(problems, env, samples, progress=progress)
    by_id = {t.problem_id: t for t in trees}
    solutions = {t.problem_id: solution_chains(t) for t in trees}
    first_new = {pid: {n.id: len(n.children) for chain in chains for n in chain} for pid, chains in solutions.items()}
    records: dict[str, list[dict]] = {}

    def done(tree: Tree) -> None:
        records[tree.problem_id] = [_record(tree, chain, first_new[tree.problem_id], completions, env)
                                    for chain in solutions[tree.problem_id]]
        if on_problem_done:
            on_problem_done(records[tree.problem_id])

    def start(problem) -> Chains:
        starts = [n for chain in solutions[problem.id] for n in chain[:-1]]  # every step but the last
        return Chains(by_id[problem.id], completions, env.config.seed + 1, starts, whole=one_request)

    expander = Expander(env)
    _, completing = Driver(expander, env.config, "completer", done, progress).run(problems, start)
    return [r for p in problems for r in records.get(p.id, [])], sampling, completing


def _record(tree: Tree, chain: list[Node], first_new: dict[int, int], completions: int, env: SearchEnv) -> dict:
    hard, soft = estimates(tree, chain, first_new)
    last = chain[-1]
    return {
        "problem_id": tree.problem_id, "question": tree.question, "gold": tree.gold,
        "steps": [n.text for n in chain], "hard": hard, "soft": soft,
        "answer": last.answer, "correct": tree.is_success(last), "completions": completions,
        "format": env.fmt.name,
    }
