"""Policy data (rStar step 3): per problem, the best verified trajectories, rendered for SFT.

Among trajectories whose final answer is correct, the top ``top_k`` by average step Q (ties: the
higher minimum Q). A trajectory whose code errored anywhere is dropped even if it recovered: the
policy should not learn to write failing code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm import tqdm

from evomath.files import write_jsonl
from evomath.tree import Tree, read_trees
from training import TrainingInputError
from training.trajectories import Trajectory, answered_trajectories, normalise, rank_key


def best_correct(tree: Tree, top_k: int = 2, near_duplicates: bool = False) -> list[Trajectory]:
    """The tree's top ``top_k`` correct, error-free trajectories; identical step lists count once, and
    with ``near_duplicates`` so do solutions whose texts differ only in case, punctuation and spacing
    (``normalise``): the next one in rank takes the place, so the data holds more distinct solutions."""
    def key(traj: Trajectory):
        return normalise("".join(traj.steps)) if near_duplicates else traj.steps

    ranked = sorted((t for t in answered_trajectories(tree) if t.correct and not t.code_error), key=rank_key)
    chosen: dict = {}
    for traj in ranked:
        if len(chosen) == top_k:
            break
        chosen.setdefault(key(traj), traj)
    return list(chosen.values())


def select_sft(trees: Iterable[Tree], fmt, top_k: int = 2, near_duplicates: bool = False) -> list[dict]:
    """SFT rows ``{prompt, completion, problem_id, avg_q, min_q}``; problems with no correct trajectory add none."""
    rows = []
    for tree in trees:
        for traj in best_correct(tree, top_k, near_duplicates):
            prompt, completion = fmt.render(tree.question, list(traj.steps))
            rows.append(
                {
                    "prompt": prompt,
                    "completion": completion,
                    "problem_id": tree.problem_id,
                    "avg_q": traj.avg_q,
                    "min_q": traj.min_q,
                }
            )
    return rows


def make_sft_data(trees_path: str | Path, out_path: str | Path, fmt, top_k: int = 2, progress: bool = False,
                  near_duplicates: bool = False) -> dict:
    """Select from a trees file and write the SFT JSONL atomically; an empty selection is an error."""
    trees = list(read_trees(trees_path))
    rows = select_sft(tqdm(trees, desc="SFT data", unit="tree", disable=not progress), fmt, top_k, near_duplicates)
    if not rows:
        raise TrainingInputError(
            f"{trees_path}: no correct, error-free trajectory in {len(trees)} trees, so there is nothing to "
            "fine-tune on (every problem is hard: give hard problems more rollouts or use easier problems)"
        )
    write_jsonl(out_path, rows)
    problems = len({row["problem_id"] for row in rows})
    return {"trees": len(trees), "problems": problems, "examples": len(rows), "path": str(out_path)}


def chat_fn(model_dir: str | Path) -> Callable[[str], str]:
    """The model's chat template as ``user_text -> prompt``, for the "chat" prompt styles."""
    from transformers import AutoTokenizer

    from evomath.backends.base import render_chat

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    render_chat(tokenizer, "", source=str(model_dir))  # refuse a model without a chat template now
    return lambda user_text: render_chat(tokenizer, user_text, source=str(model_dir))
