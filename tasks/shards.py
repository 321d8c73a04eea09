"""MCTS shards: a round's problems split across workers, each with its own engine.

Shard i of n searches every n-th training problem with the generate stage in its own directory
(``round-k/shards/i-of-n/``), so each shard resumes on its own; the merge folds the shards'
trees into the round's trees.jsonl, after which the round's generate stage has nothing left to
search. Run under prefect-ray's task runner, the shards go to a Ray cluster (one engine per
worker); the workers must see the run directory (a shared file system on a real cluster).
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from evolution import stages
from evolution.stages import RoundContext
from evomath.files import write_jsonl
from evomath.tree import read_trees, write_trees


def shard_context(ctx: RoundContext, index: int, count: int) -> RoundContext:
    """The round restricted to every ``count``-th problem, in its own directory."""
    directory = ctx.dir / "shards" / f"{index}-of-{count}"
    directory.mkdir(parents=True, exist_ok=True)
    problems = stages.training_problems(ctx.config)[index::count]
    source = directory / "problems.jsonl"
    write_jsonl(source, ({"id": p.id, "question": p.question, "answer": p.answer} for p in problems))
    data = ctx.config.data.model_copy(update={"source": str(source.resolve()), "limit": None})
    config = ctx.config.model_copy(update={"data": data})
    return RoundContext(config=config, round=ctx.round, dir=directory, policy=ctx.policy, ppm=ctx.ppm)


@task(name="generate-shard", task_run_name="generate-round-{ctx.round}-shard-{index}-of-{count}")
def generate_shard(ctx: RoundContext, index: int, count: int) -> str:
    shard = shard_context(ctx, index, count)
    stages.run_stage(shard, "generate")
    return str(shard.path("trees.jsonl"))


def merge_shards(ctx: RoundContext, paths: list[str]) -> int:
    """Shard trees into the round's trees.jsonl in problem order; trees already there are kept.

    Shards differ from the round only in their problem list, so their trees are stamped with the
    round's generation key (its generate stage then resumes them instead of starting afresh)."""
    out = ctx.path("trees.jsonl")
    key = stages.generation_key(ctx)
    trees = {t.problem_id: t for path in paths for t in read_trees(Path(path))}
    for tree in trees.values():
        tree.meta[stages.GENERATION_KEY] = key
    if out.exists():
        trees |= {t.problem_id: t for t in read_trees(out, tolerate_torn_tail=True) if t.meta.get(stages.GENERATION_KEY) == key}
    order = [p.id for p in stages.training_problems(ctx.config)]
    write_trees(out, [trees[i] for i in order if i in trees])
    return len(trees)
