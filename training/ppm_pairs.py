"""PPM preference pairs (rStar step 4), read off the search trees.

At every expanded node, children that lead to a correct answer (up to 2, highest Q first) are paired
against children that lead only to wrong answers (up to 2, lowest Q first); both share the node's
prefix. "Correct" means a success (``Tree.is_success``: right, and no failing code on the way), so a
broken step is never a chosen one; "only to wrong answers" means a graded wrong answer below and no
success. Dead ends (too deep, code errors, unparsable, prompt too long) are not wrong answers (rStar's
negatives lead to wrong answers), and unvisited siblings carry no evidence: neither is ever a rejected
step. A problem whose rollouts are all correct or all wrong therefore yields no step pairs.

For the final step, where siblings rarely differ in answer, the 2 correct full trajectories with the
highest average Q are paired against the 2 wrong ones with the lowest (prompt: the question alone).

Two filters drop uninformative pairs: a Q margin below ``min_q_margin`` and chosen/rejected texts
closer than ``min_edit_distance`` characters (near-duplicate steps teach the model nothing).

Prompt and step text are built with ``evomath.scoring.ppm_text``, the same function the scorer
uses, so the PPM is trained on exactly the text it later scores: ``prompt + chosen``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from evomath.config import PPMConfig
from evomath.files import write_jsonl
from evomath.scoring import ppm_text
from evomath.tree import Tree, read_trees
from training import TrainingInputError
from training.trajectories import Trajectory, answered_trajectories, rank_key

PAIRS_PER_SIDE = 2


def build_pairs(trees: Iterable[Tree], fmt, config: PPMConfig, outcome_only: bool = False) -> list[dict]:
    """All step and final-answer pairs of the trees that pass the filters, tree by tree;
    ``outcome_only``: the final-answer pairs alone (rStar's ORM baseline ranks whole solutions)."""
    rows = []
    for tree in trees:
        candidates = [*([] if outcome_only else step_pairs(tree, fmt)), *final_pairs(tree, fmt)]
        rows.extend(row for row in candidates if keep_pair(row, config))
    return rows


def step_pairs(tree: Tree, fmt) -> list[dict]:
    good, wrong = tree.leads_to_correct(), tree.leads_to_wrong_answer()
    rows = []
    for node in tree.nodes:
        kids = tree.children(node)
        chosen = sorted((c for c in kids if good[c.id]), key=lambda c: (-c.q, c.id))[:PAIRS_PER_SIDE]
        rejected = sorted((c for c in kids if wrong[c.id] and not good[c.id]), key=lambda c: (c.q, c.id))
        prefix = tree.steps_text(node)
        for pos in chosen:
            for neg in rejected[:PAIRS_PER_SIDE]:
                prompt, chosen_text = split_prompt(fmt, tree.question, prefix, [pos.text])
                _, rejected_text = split_prompt(fmt, tree.question, prefix, [neg.text])
                rows.append(pair_row(tree, prompt, chosen_text, rejected_text, pos.depth, pos.q, neg.q, final=False))
    return rows


def final_pairs(tree: Tree, fmt) -> list[dict]:
    trajectories = answered_trajectories(tree)
    best = sorted((t for t in trajectories if t.correct and not t.code_error), key=rank_key)[:PAIRS_PER_SIDE]
    worst = sorted((t for t in trajectories if tree.is_wrong_answer(t.leaf)), key=_worst_first)[:PAIRS_PER_SIDE]
    rows = []
    for pos in best:
        for neg in worst:
            prompt, chosen_text = split_prompt(fmt, tree.question, [], list(pos.steps))
            _, rejected_text = split_prompt(fmt, tree.question, [], list(neg.steps))
            rows.append(
                pair_row(tree, prompt, chosen_text, rejected_text, pos.leaf.depth, pos.avg_q, neg.avg_q, final=True)
            )
    return rows


def _worst_first(traj: Trajectory) -> tuple[float, float, int]:
    return (traj.avg_q, traj.min_q, traj.leaf.id)


def split_prompt(fmt, question: str, prefix: list[str], steps: list[str]) -> tuple[str, str]:
    """(PPM text of the prefix, the text ``steps`` add to it): prompt + step == the scorer's text."""
    prompt = ppm_text(question, fmt.trajectory(prefix))
    full = ppm_text(question, fmt.trajectory([*prefix, *steps]))
    if not full.startswith(prompt):
        raise ValueError(f"format {fmt.name!r}: a prefix's trajectory does not start the trajectory extending it")
    return prompt, full[len(prompt) :]


def pair_row(tree, prompt, chosen, rejected, depth, q_chosen, q_rejected, *, final: bool) -> dict:
    return {
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "depth": depth,
        "problem_id": tree.problem_id,
        "q_chosen": q_chosen,
        "q_rejected": q_rejected,
        "final": final,
    }


def keep_pair(row: dict, config: PPMConfig) -> bool:
    if row["q_chosen"] - row["q_rejected"] < config.min_q_margin:
        return False
    return edit_distance_at_least(row["chosen"], row["rejected"], config.min_edit_distance)


def edit_distance_at_least(a: str, b: str, k: int) -> bool:
    """Levenshtein(a, b) >= k, cheaply: two O(n) lower bounds settle most pairs before any DP."""
    if k <= 0 or abs(len(a) - len(b)) >= k:
        return True
    count_a, count_b = Counter(a), Counter(b)
    # Each edit removes at most one character from the multiset difference on either side.
    if max(sum((count_a - count_b).values()), sum((count_b - count_a).values())) >= k:
        return True
    return capped_levenshtein(a, b, k) >= k


def capped_levenshtein(a: str, b: str, cap: int) -> int:
    """min(Levenshtein(a, b), cap), computing only the diagonal band |i - j| < cap: O(len · cap)."""
    m = len(b)
    if abs(len(a) - m) >= cap:
        return cap
    prev = [min(j, cap) for j in range(m + 1)]
    for i in range(1, len(a) + 1):
        cur = [cap] * (m + 1)
        lo, hi = max(0, i - cap + 1), min(m, i + cap - 1)
        if lo == 0:
            cur[0] = min(i, cap)
        for j in range(max(1, lo), hi + 1):
            cur[j] = min(prev[j - 1] + (a[i - 1] != b[j - 1]), prev[j] + 1, cur[j - 1] + 1, cap)
        if min(cur[lo : hi + 1]) >= cap:
            return cap
        prev = cur
    return prev[m]


def pair_counts_by_depth(pairs: Iterable[dict]) -> dict[str, int]:
    """Pairs per step depth ("1", "2", ...), final-answer pairs under "final": JSON- and MLflow-friendly keys."""
    counts = Counter("final" if row["final"] else str(row["depth"]) for row in pairs)
    depths = sorted((key for key in counts if key != "final"), key=int)
    ordered = {key: counts[key] for key in depths}
    if "final" in counts:
        ordered["final"] = counts["final"]
    return ordered


def make_pairs(trees_path: str | Path, out_path: str | Path, fmt, config: PPMConfig, progress: bool = False,
               outcome_only: bool = False) -> dict:
    """Build pairs from a trees file and write them atomically; no pair at all is an error."""
    trees = list(read_trees(trees_path))
    pairs = build_pairs(tqdm(trees, desc="PPM pairs", unit="tree", disable=not progress), fmt, config, outcome_only)
    if not pairs:
        raise TrainingInputError(
            f"{trees_path}: no PPM pair from {len(trees)} trees: pairs need problems with both correct and "
            "wrong rollouts (or relax min_q_margin / min_edit_distance)"
        )
    built = len(pairs)
    if config.max_pairs is not None and built > config.max_pairs:  # a seeded sample, in file order
        keep = sorted(random.Random(config.seed).sample(range(built), config.max_pairs))
        pairs = [pairs[i] for i in keep]
    write_jsonl(out_path, ({**row, "format": fmt.name} for row in pairs))
    problems = len({row["problem_id"] for row in pairs})
    return {"trees": len(trees), "problems": problems, "pairs": len(pairs), "pairs_built": built,
            "by_depth": pair_counts_by_depth(pairs)}
