"""Generation runs for evaluation: one batched search per distinct need (greedy, a shared best-of-N,
a beam setting, an MCTS setting) or saved trees for offline re-selection, with what each cost.

A run holds each problem's trees in problem order; the evaluation methods (``evaluation.methods``)
say which run they read and choose from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from evaluation.select import chains, is_answer
from evomath.arithmetic import derivation_scores
from evomath.errors import InputError, MissingInputError
from evomath.scoring import prefix_scores
from evomath.search import SearchEnv, beam_search, best_of_n, greedy, mcts
from evomath.tree import Tree, read_trees

SEARCH_SEPARATOR = "#"  # MCTS search s of problem p runs as problem "p#s" (its own seeds)

# Gold-free step rules that score like a reward model (ValueFn: +1 a step passes, -1 it does not)
# and gate one: the arithmetic rule reads natural-language steps (a code step is checked by running).
GATES: dict[str, Callable] = {"arithmetic": derivation_scores}


@dataclass
class Run:
    """One generation's trees, per problem in problem order, and what it cost.

    Reward-model scores are kept beside the trees, one mapping per reward-model kind and problem,
    so several verifiers read the very same samples: ``step_scores[kind][i]`` maps a node id of
    problem i's sample tree to its score, ``answer_scores[kind][i]`` maps (tree index, answer node
    id) of saved trees to the score of that answer."""

    name: str
    trees: list[list[Tree]]
    seconds: float = 0.0  # wall time of the batched run
    samples: int = 1
    scoring_seconds: dict[str, float] = field(default_factory=dict)  # per reward-model kind
    step_scores: dict[str, list[dict[int, float]]] = field(default_factory=dict)
    answer_scores: dict[str, list[dict[tuple[int, int], float]]] = field(default_factory=dict)


@dataclass
class Context:
    problems: Sequence
    env: SearchEnv  # env.value_fn: the reward model that guides beam search and MCTS
    progress: bool
    scorers: dict[str, Callable] = field(default_factory=dict)  # reward-model kind -> ValueFn


def as_value_fn(scorer) -> Callable | None:
    """A RewardScorer (itself a ValueFn, kept whole for its one-pass ``score_prefixes``), an object
    with ``.score``, or a plain ValueFn."""
    if scorer is None or callable(scorer):
        return scorer
    return scorer.score


# --- generation runs ----------------------------------------------------------------------------


def run_greedy(ctx: Context) -> Run:
    trees, stats = greedy(ctx.problems, ctx.env, progress=ctx.progress)
    return Run("greedy", [[t] for t in trees], stats.seconds)


def run_samples(ctx: Context, n: int, needs: Iterable[tuple[str | None, str | None]] = ()) -> Run:
    """``n`` samples per problem, every answered chain scored at every step by what ``needs`` names
    (the same samples for all of them and for maj/pass): (kind, None) a reward model's scores under
    "kind", (None, gate) a rule's of ``GATES`` under "gate", (kind, gate) the model's behind the
    rule under "kind+gate" (``gated_scores``; charged both scorings)."""
    needs = set(needs)
    trees, stats = best_of_n(ctx.problems, replace(ctx.env, value_fn=None), n, progress=ctx.progress)
    run = Run(f"samples@{n}", [[t] for t in trees], stats.seconds, samples=n)
    for name in sorted({part for need in needs for part in need if part}):
        began = time.perf_counter()
        run.step_scores[name] = score_chains(trees, GATES[name] if name in GATES else ctx.scorers[name])
        run.scoring_seconds[name] = time.perf_counter() - began
    for kind, gate in sorted(need for need in needs if all(need)):
        run.step_scores[f"{kind}+{gate}"] = gated_scores(trees, run.step_scores[kind], run.step_scores[gate])
        run.scoring_seconds[f"{kind}+{gate}"] = run.scoring_seconds[kind] + run.scoring_seconds[gate]
    keep_scores(trees, run.step_scores)
    return run


def keep_scores(trees: Sequence[Tree], step_scores: dict[str, list[dict[int, float]]]) -> None:
    """Write the scores into the saved trees too: every kind's in ``meta["scores"]`` (node id ->
    score), and the PPM's (else the first kind's) as the nodes' priors, as a search would have."""
    if not step_scores:
        return
    models = sorted(step_scores, key=lambda key: ("+" in key or key in GATES, key != "ppm", key))
    main = models[0]  # the PPM's, else a model's own, else a rule's
    for i, tree in enumerate(trees):
        tree.meta["scores"] = {kind: {str(k): v for k, v in per[i].items()} for kind, per in step_scores.items()}
        for node_id, score in step_scores[main][i].items():
            tree.nodes[node_id].prior = score


def score_chains(trees: Sequence[Tree], value_fn: Callable) -> list[dict[int, float]]:
    """Every step's score of every answered chain, per tree (node id -> score), so min-step and
    last-step aggregation both have what they need."""
    answered = [(i, chain) for i, t in enumerate(trees) for chain in chains(t) if is_answer(chain[-1])]
    items = [(trees[i].question, [n.text for n in chain]) for i, chain in answered]
    out: list[dict[int, float]] = [{} for _ in trees]
    for (i, chain), scores in zip(answered, prefix_scores(value_fn, items) if items else [], strict=True):
        for node, score in zip(chain, scores, strict=True):
            out[i][node.id] = float(score)
    return out


def gated_scores(trees: Sequence[Tree], model: Sequence[dict[int, float]], gate: Sequence[dict[int, float]]
                 ) -> list[dict[int, float]]:
    """A model's step scores behind a rule's gate: a step the gate passes, with every step before
    it on its chain, keeps the model's order in [0, 1] ((s + 1) / 2); from the first step the gate
    scores below 0 on, the chain's steps drop to [-1, 0] (the same minus 1). So best-of-N picks
    among the chains the rule lets through by the model's score (any chain it lets through beats
    every chain it stops), a fixed cut at 0 is the rule's, and a cut fit above 0 adds the model's.
    ``model`` and ``gate`` are score_chains' output over the same ``trees`` (node id -> score)."""
    out: list[dict[int, float]] = [{} for _ in trees]
    for i, tree in enumerate(trees):
        for chain in chains(tree):
            stopped = False
            for node in chain:
                if node.id not in model[i]:
                    continue
                stopped = stopped or gate[i].get(node.id, 0.0) < 0
                out[i][node.id] = (model[i][node.id] + 1.0) / 2.0 - float(stopped)
    return out


def run_beam(ctx: Context, width: int, expand: int) -> Run:
    trees, stats = beam_search(ctx.problems, ctx.env.with_config(beam_width=width, beam_expand=expand),
                               progress=ctx.progress)
    return Run(f"beam-{width}x{expand}", [[t] for t in trees], stats.seconds)


def run_mcts(ctx: Context, searches: int) -> Run:
    """``searches`` independent trees per problem, all batched in one MCTS call; the PPM both
    guides the search and scores the answers (no gold in the backups)."""
    replicas = [replace(p, id=f"{p.id}{SEARCH_SEPARATOR}{s}") for p in ctx.problems for s in range(searches)]
    trees, stats = mcts(replicas, ctx.env, progress=ctx.progress, reward="value")
    for tree in trees:
        tree.problem_id, search = tree.problem_id.rsplit(SEARCH_SEPARATOR, 1)
        tree.meta["search"] = int(search)
    grouped = [trees[i * searches : (i + 1) * searches] for i in range(len(ctx.problems))]
    return Run(f"mcts@{searches}", grouped, stats.seconds)


def load_offline(ctx: Context, source: Iterable[Tree], where: str, kinds: Iterable[str] = ()) -> Run:
    """Saved trees matched to the problems by id; a run's cost is what the trees recorded. Trees
    whose Q values were backed up from gold rewards (a training search) are refused: re-selecting
    by them would let the gold answer choose."""
    by_id: dict[str, list[Tree]] = {}
    for tree in source:
        by_id.setdefault(tree.problem_id, []).append(tree)
    grouped = [by_id.get(p.id, []) for p in ctx.problems]
    if not any(grouped):
        raise InputError(f"no saved tree in {where} matches a problem of this benchmark")
    gold = [t.problem_id for trees in grouped for t in trees if t.meta.get("reward", "gold") == "gold"]
    if gold:
        raise InputError(f"{where}: trees searched with gold rewards (e.g. {gold[0]}): their Q values and visits "
                         "know the answer, so offline re-selection from them would not be an evaluation; give trees "
                         "an evaluation MCTS saved (reward from the value function)")
    seconds = sum(t.meta.get("seconds", 0.0) for trees in grouped for t in trees)
    run = Run("offline", grouped, seconds)
    for kind in sorted(kinds):
        began = time.perf_counter()
        run.answer_scores[kind] = score_answers(grouped, ctx.scorers[kind])
        run.scoring_seconds[kind] = time.perf_counter() - began
    return run


def score_answers(grouped: list[list[Tree]], value_fn: Callable) -> list[dict]:
    """A reward model's score of every answer in saved trees, in one call, kept beside the trees (a
    prior would change the nodes' Q, which offline-q reads)."""
    keys = [(i, j, n) for i, trees in enumerate(grouped) for j, t in enumerate(trees) for n in t.answered() if is_answer(n)]
    scores = value_fn([(grouped[i][j].question, grouped[i][j].steps_text(n)) for i, j, n in keys]) if keys else []
    out: list[dict] = [{} for _ in grouped]
    for (i, j, node), score in zip(keys, scores, strict=True):
        out[i][j, node.id] = float(score)
    return out


def offline_source(trees, benchmark: str) -> tuple[list[Tree], str]:
    """Trees from a JSONL file, or ``<dir>/<benchmark>.jsonl`` (what ``trees/<run>/`` holds)."""
    path = Path(trees)
    if path.is_dir():
        path = path / f"{benchmark}.jsonl"
    if not path.is_file():
        raise MissingInputError(f"no saved trees at {path}")
    return list(read_trees(path)), str(path)
