"""One round of self-evolution (rStar-Math's loop) as plain functions over a run directory.

Each stage reads files of earlier stages and writes its own, then records its metrics in
``stage-<name>.json`` together with a key made of the config and its input files' hashes. A stage
whose key is unchanged is skipped, so an interrupted round resumes where it stopped; generation
also resumes inside the stage, since finished trees are appended one by one. ``tasks/`` wraps these
functions for Prefect with the same keys; nothing here knows about Prefect or MLflow.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from evomath import engines
from evomath.config import BUCKETS as DIFFICULTIES
from evomath.config import ExperimentConfig, SearchConfig
from evomath.faults import fault_point
from evomath.files import append_jsonl, private_dir, read_jsonl, read_records, resume_jsonl, write_json, write_jsonl
from evomath.models import model_fingerprint
from evomath.plan import MemoryPlan, apply_plan, plan_for
from evomath.problems import Problem, load_benchmark
from evomath.search.engine import SearchEnv
from evomath.tree import Tree, append_trees, read_trees, write_trees

log = logging.getLogger(__name__)

# What a round leaves under its directory: the stage bodies and the registry's inputs and outputs
# both name these, so a file is spelled once.
TREES = "trees.jsonl"  # MCTS trees, appended as each finishes
TREES_FINAL = "trees-final.jsonl"  # the same with the hard problems' extra rollouts
TREES_EXTRA = "trees-final.partial.jsonl"  # extra_rollouts' trees as each finishes (resume; removed at the end)
BUCKETS = "buckets.jsonl"
SFT_DATA = "sft.jsonl"
SFT_UNION = "sft-all-rounds.jsonl"  # rounds 1..k's SFT data, when a round trains on all of it (sft_data: all_rounds)
PAIRS = "pairs.jsonl"  # PPM and ORM training pairs
STEP_LABELS = "step-labels.jsonl"  # PRM, PQM and value-head step labels
POLICY = "policy"  # model directories
POLICY_RL = "policy-rl"  # the policy after the reinforce stage (rl.enabled): the round's policy when present
RL_CURVES = "rl-curves.jsonl"  # the reinforce stage's per-step log
PPM = "ppm"  # the round's reward model, of the kind config.reward_model names (a PPM by default)
EVAL = "eval"
ProgressFn = Callable[[int, int], None]


@dataclass
class RoundContext:
    config: ExperimentConfig
    round: int
    dir: Path
    policy: str  # the model this round generates with
    ppm: str | None  # the previous round's PPM, if any

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def uses_ppm(self) -> bool:
        return self.ppm is not None and self.round >= self.config.ppm_from_round


def experiment_dir(config: ExperimentConfig) -> Path:
    return Path(config.run_dir) / config.name


def round_dir(config: ExperimentConfig, k: int) -> Path:
    return experiment_dir(config) / f"round-{k}"


def round_context(config: ExperimentConfig, k: int, policy: str | None = None, ppm: str | None = None) -> RoundContext:
    """Round k generates with the models rounds 1..k-1 left (a round that trained none passes
    its inputs on), round 1 with ``config.policy``, unless told otherwise."""
    chained_policy, chained_ppm = config.policy, None
    for j in range(1, k):
        directory = round_dir(config, j)
        for name in (POLICY, POLICY_RL):
            if (directory / name).is_dir():
                chained_policy = str(directory / name)
        if (directory / PPM).is_dir():
            chained_ppm = str(directory / PPM)
        elif config.reward_model == "value" and (directory / POLICY / "value_head").is_dir():
            chained_ppm = str(directory / POLICY)  # AlphaMath: the value head is on the policy
    private_dir(experiment_dir(config))
    directory = round_dir(config, k)
    directory.mkdir(parents=True, exist_ok=True)
    return RoundContext(config=config, round=k, dir=directory, policy=policy or chained_policy,
                        ppm=ppm or chained_ppm)


# ---------------------------------------------------------------- shared pieces


def round_search_config(ctx: RoundContext) -> SearchConfig:
    """rStar's bootstrap round samples at 0.7 with a few-shot prompt; later rounds search with the
    configured temperature and the prompt the policy was fine-tuned on (no examples)."""
    from evomath.formats import TRAINING_STYLE

    search = ctx.config.search
    if ctx.round == 1:
        search = search.model_copy(update={"temperature": ctx.config.bootstrap_temperature})
    else:
        search = search.model_copy(update={"prompt_style": TRAINING_STYLE[search.prompt_style]})
    return search.model_copy(update={"seed": search.seed + 1000 * ctx.round})


def training_problems(config: ExperimentConfig) -> list[Problem]:
    return load_benchmark(config.data.source, limit=config.data.limit, seed=config.data.seed)


def _policy_format(ctx: RoundContext):
    """The round's step format with the policy's own chat template (no engine needed)."""
    from evomath.formats import make_format

    search = round_search_config(ctx)
    chat = None
    if search.prompt_style.startswith("chat"):
        from evomath.models import resolve_model
        from training.sft_data import chat_fn

        chat = chat_fn(resolve_model(ctx.policy))
    return make_format(search.step_format, search.prompt_style, chat)


@contextmanager
def _value_fn(ctx: RoundContext) -> Iterator:
    """The previous round's PPM as the search's value function (None before ``ppm_from_round``), on
    the device the memory plan gave it; closed when the search is done."""
    if not ctx.uses_ppm:
        yield None
        return
    from evomath.scoring import load_scorer

    scorer = load_scorer(ctx.ppm, kind=ctx.config.reward_model, device=device_plan(ctx.config).scorer_device)
    try:
        yield scorer
    finally:
        scorer.close()


# ---------------------------------------------------------------- the memory plan


def uses_reward_model(config: ExperimentConfig) -> bool:
    """Does some round's search or the evaluation score with a PPM beside the policy's engine?"""
    from evaluation.methods import parse_methods

    searched = max(config.ppm_from_round, config.ppm_train_from_round + 1) <= config.rounds
    return searched or any(spec.needs_ppm for spec in parse_methods(config.eval.methods))


@functools.lru_cache(maxsize=8)
def _plan(config_json: str) -> MemoryPlan:
    config = ExperimentConfig.model_validate_json(config_json)
    return plan_for(config, uses_reward_model(config))


def device_plan(config: ExperimentConfig) -> MemoryPlan:
    """Where the engine, the PPM and training live on this machine (``evomath.plan``), per config."""
    return _plan(config.model_dump_json())


def check_plan(config: ExperimentConfig) -> MemoryPlan:
    """Refuse, before any work starts, a config that cannot fit this machine (``PlanError``)."""
    return device_plan(config).check()


def engine_config(config: ExperimentConfig):
    """The engine settings with the memory fraction the plan chose (on a CPU: as configured)."""
    import torch

    if not torch.cuda.is_available():
        return config.engine
    return apply_plan(config, device_plan(config)).engine


@contextmanager
def _search_env(ctx: RoundContext) -> Iterator[SearchEnv]:
    """The round's search environment: the shared engine on the round's policy, the round's step
    format and search settings, a sandbox, a grader and the PPM; closed when the search is done."""
    from evomath.grading import Grader
    from evomath.sandbox import Sandbox

    backend = engines.get_backend(ctx.policy, engine_config(ctx.config))
    sandbox = Sandbox(ctx.config.sandbox, hide=[Path(ctx.config.run_dir).resolve()])  # gold answers, MLflow's store
    with sandbox, Grader(workers=1) as grader, _value_fn(ctx) as value_fn:
        yield SearchEnv(backend, _policy_format(ctx), round_search_config(ctx), sandbox, grader, value_fn)


# ---------------------------------------------------------------- stages


def generate(ctx: RoundContext, on_progress: ProgressFn | None = None) -> dict:
    """MCTS over the round's problems into trees.jsonl, skipping problems already searched."""
    from evomath.search import mcts

    problems = training_problems(ctx.config)
    out = ctx.path(TREES)
    key = generation_key(ctx)
    done = _recover_trees(out, key)
    todo = [p for p in problems if p.id not in done]
    count = len(done)

    def keep(tree: Tree) -> None:
        nonlocal count
        tree.meta[GENERATION_KEY] = key
        append_trees(out, [tree])
        count += 1
        if on_progress:
            on_progress(count, len(problems))
        fault_point("generate:tree")

    start = time.perf_counter()
    stats = startup = None
    if todo:
        with _search_env(ctx) as env:
            startup = time.perf_counter() - start
            _, stats = mcts(todo, env, on_tree_done=keep)
    trees = list(read_trees(out))
    solved = sum(any(t.is_success(n) for n in t.answered()) for t in trees)
    metrics = {
        "problems": len(trees),
        "resumed_problems": len(done),
        "solve_rate": solved / len(trees) if trees else 0.0,
        "seconds": time.perf_counter() - start,
    }
    if stats is not None:
        metrics |= {"generated_tokens": stats.generated_tokens, "tokens_per_s": stats.tokens_per_second,
                    "seconds_startup": startup} | stats.time_split()
    return metrics | {"artifacts": {"trees": str(out)}}


GENERATION_KEY = "generation_key"


def generation_key(ctx: RoundContext) -> str:
    """What a round's trees depend on: the round's search settings, the engine, the sandbox, the
    problems, and the models (by content, ``model_fingerprint``). Every tree carries it, so a rerun
    after any of these changed does not continue trees another setting made."""
    parts = {
        "search": round_search_config(ctx).model_dump(mode="json"),
        "engine": ctx.config.engine.model_dump(mode="json"),
        "sandbox": ctx.config.sandbox.model_dump(mode="json"),
        "data": ctx.config.data.model_dump(mode="json"),
        "policy": model_fingerprint(ctx.policy),
        "ppm": model_fingerprint(ctx.ppm) if ctx.uses_ppm else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _recover_trees(path: Path, key: str) -> dict[str, Tree]:
    """Finished trees of an interrupted run made under ``key``; a torn last line is dropped from the
    file. Trees made under another key (the config or a model changed since) are not continued: the
    file is moved aside to ``<name>.stale`` (not deleted) and generation starts afresh."""
    if not path.exists():
        return {}
    trees = {t.problem_id: t for t in read_trees(path, tolerate_torn_tail=True)}
    stale = sum(t.meta.get(GENERATION_KEY) != key for t in trees.values())
    if stale:
        aside = _move_aside(path)
        log.warning("%s: %d of %d trees were made with other settings or models; moved to %s, starting afresh",
                    path, stale, len(trees), aside)
        return {}
    write_trees(path, trees.values())
    return trees


def _move_aside(path: Path) -> Path:
    """Rename ``path`` to the first free ``<name>.stale``, ``<name>.stale.1``, ... (nothing is deleted)."""
    aside = next(a for i in itertools.count()
                 if not (a := path.with_name(path.name + (f".stale.{i}" if i else ".stale"))).exists())
    os.replace(path, aside)
    return aside


def extra_rollouts_key(ctx: RoundContext, schedule: list[int]) -> str:
    """What the extra rollouts continue from and with: the generation's settings and models, the
    schedule, and trees.jsonl's content. Saved partial work under another key is not continued."""
    parts = [generation_key(ctx), schedule, _file_hash(ctx.path(TREES))]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


_EXTRA_ROW = {"key": str, "attempt": int, "tree": dict}


def _recover_extra(path: Path, key: str) -> dict[str, tuple[int, Tree]]:
    """Per problem, the last attempt an interrupted ``extra_rollouts`` saved and the tree after it;
    a torn last line is cut off. Rows under another key are moved aside (``<name>.stale``)."""
    if not path.exists():
        return {}
    resume_jsonl(path)  # the stage's own appends: a crash may have torn the last line
    rows = list(read_records(path, _EXTRA_ROW))
    stale = sum(row["key"] != key for _, row in rows)
    if stale:
        aside = _move_aside(path)
        log.warning("%s: %d of %d saved trees were extended from other trees, settings or models; moved to %s, "
                    "starting afresh", path, stale, len(rows), aside)
        return {}
    saved: dict[str, tuple[int, Tree]] = {}
    for where, row in rows:
        tree = Tree.from_dict(row["tree"], where)
        if row["attempt"] >= saved.get(tree.problem_id, (0, None))[0]:
            saved[tree.problem_id] = (row["attempt"], tree)
    return saved


def extra_rollouts(ctx: RoundContext, on_progress: ProgressFn | None = None) -> dict:
    """More rollouts with new seeds for hard problems (rStar: 16, and 64 then 128 in round 4).

    Attempt ``i`` of the schedule gives every problem still hard after attempt ``i - 1`` its
    rollouts. Each tree is appended to ``trees-final.partial.jsonl`` the moment its search ends, so
    a rerun after a crash extends only the trees that attempt had not finished; since every
    request's seed comes from (seed, problem, rollout, depth), the result is the uninterrupted
    run's. trees-final.jsonl is written atomically at the end and the partial file removed."""
    from evomath.search import SearchStats, mcts
    from training.buckets import bucket_of, hard_problem_ids

    generated = list(read_trees(ctx.path(TREES)))
    hard_before = len(hard_problem_ids(generated))  # before the search below extends these trees in place
    schedule = ctx.config.hard_extra_rollouts.get(ctx.round, [])
    by_id = {p.id: p for p in training_problems(ctx.config)}
    partial = ctx.path(TREES_EXTRA)
    key = extra_rollouts_key(ctx, schedule)
    saved = _recover_extra(partial, key)
    attempt_of = {pid: attempt for pid, (attempt, _) in saved.items()}  # the last attempt that extended it
    trees = [saved[t.problem_id][1] if t.problem_id in saved else t for t in generated]
    stats, startup = SearchStats(), 0.0
    with ExitStack() as stack:
        env = None
        for attempt, rollouts in enumerate(schedule, 1):
            hard = [t for t in trees if bucket_of(t) == "hard"]
            if not hard or rollouts <= 0:
                break
            # Trees this attempt saved before a crash are not extended again (the ones it rescued
            # are no longer hard; the rest of the hard ones are unchanged since attempt - 1).
            todo = [t for t in hard if attempt_of.get(t.problem_id, 0) < attempt]
            if not todo:
                continue
            if env is None:
                began = time.perf_counter()
                env = stack.enter_context(_search_env(ctx))
                startup = time.perf_counter() - began

            def save(tree: Tree, attempt: int = attempt) -> None:
                append_jsonl(partial, [{"key": key, "attempt": attempt, "tree": tree.to_dict()}])
                attempt_of[tree.problem_id] = attempt
                fault_point("extra_rollouts:tree")

            # A continued tree keeps counting: it gets ``rollouts`` more on top of what it had.
            extra = env.with_config(seed=env.config.seed + 100 * attempt, rollouts=rollouts)
            stats.add(mcts([by_id[t.problem_id] for t in todo], extra, trees=todo, on_tree_done=save,
                           progress=True)[1])
    write_trees(ctx.path(TREES_FINAL), trees)
    partial.unlink(missing_ok=True)
    hard_after = len(hard_problem_ids(trees))
    return {"hard_before": hard_before, "hard_after": hard_after, "rescued": hard_before - hard_after,
            "resumed_trees": len(saved), "generated_tokens": stats.generated_tokens,
            "seconds_startup": startup} | stats.time_split() | {
            "artifacts": {"trees_final": str(ctx.path(TREES_FINAL))}}


def bucket(ctx: RoundContext) -> dict:
    """Easy / medium / hard counts per round: the round's headline."""
    from training.buckets import bucket_counts, bucket_of

    trees = list(read_trees(ctx.path(TREES_FINAL)))
    counts = bucket_counts(trees)
    per_problem = {t.problem_id: bucket_of(t) for t in trees}
    write_jsonl(ctx.path(BUCKETS), ({"problem_id": k, "bucket": v} for k, v in per_problem.items()))
    return {**counts, "solved": counts["easy"] + counts["medium"], "problems": len(trees),
            "artifacts": {"buckets": str(ctx.path(BUCKETS))}}


def select_sft(ctx: RoundContext) -> dict:
    """Top-2 trajectories per solved problem; a round that solved nothing keeps its policy. Also
    what the data is (``training.sft_stats``): its size, length in the policy's tokens, share of
    distinct solutions and, on demo problems, the share right only through a wrong step."""
    from training import TrainingInputError
    from training.sft_data import make_sft_data
    from training.sft_stats import sft_stats

    out = ctx.path(SFT_DATA)
    fmt = _policy_format(ctx)
    try:
        make_sft_data(ctx.path(TREES_FINAL), out, fmt, top_k=2, near_duplicates=ctx.config.sft_dedup)
    except TrainingInputError as err:
        log.warning("round %d: %s", ctx.round, err)
        write_jsonl(out, [])
    problems = {p.id: p for p in training_problems(ctx.config)}
    split = fmt.split if fmt.name == "natural" else None  # the step checker reads natural-language arithmetic
    stats = sft_stats(read_jsonl(out), problems, split, _token_counter(ctx))
    return stats | {"artifacts": {"sft": str(out)}}


def _token_counter(ctx: RoundContext) -> Callable[[str], int]:
    """Tokens of a text by the round's policy's tokenizer."""
    from transformers import AutoTokenizer

    from evomath.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(ctx.policy)))
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def reward_data(ctx: RoundContext) -> dict:
    """What the round's reward model (``config.reward_model``) learns from, read off the trees: PPM
    step and final pairs (rStar), ORM whole-solution pairs, PQM and value-head step Q, PRM step labels
    (the trees' correct-answer shares, or Math-Shepherd's completer on the trees' answered solutions).
    A round without any (every problem easy or hard) keeps the previous reward model."""
    from training import TrainingInputError
    from training.ppm_pairs import make_pairs

    kind = ctx.config.reward_model
    if not ctx.config.reward_learns_from_pairs:
        return _step_labels(ctx, kind)
    out = ctx.path(PAIRS)
    try:
        info = make_pairs(ctx.path(TREES_FINAL), out, _policy_format(ctx), ctx.config.ppm, outcome_only=kind == "orm")
    except TrainingInputError as err:
        log.warning("round %d: %s", ctx.round, err)
        write_jsonl(out, [])
        return {"pairs": 0, "pair_problems": 0, "artifacts": {"pairs": str(out)}}
    by_depth = {f"pairs_depth_{depth}": n for depth, n in info["by_depth"].items()}
    return {"pairs": info["pairs"], "pairs_built": info["pairs_built"], "pair_problems": info["problems"], **by_depth,
            "artifacts": {"pairs": str(out)}}


def _step_labels(ctx: RoundContext, kind: str) -> dict:
    """Step-label rows of the round's trees: Q for a PQM or value head, a PRM's hard or soft labels
    (from the completer, the trees, or the trees with the arithmetic rule's failing steps marked)."""
    from evomath.formats import make_format
    from training.step_rewards import label_summary, mark_underived, tree_step_rows

    prm = ctx.config.prm
    target = "q" if kind in ("pqm", "value") else prm.labels
    trees = list(read_trees(ctx.path(TREES_FINAL)))
    fmt = make_format(ctx.config.search.step_format)
    if kind == "prm" and prm.label_source == "completer":
        rows = _completer_rows(ctx, trees, fmt, target)
    elif kind == "prm" and prm.label_source == "trees+arithmetic":
        rows = tree_step_rows(mark_underived(trees), fmt, target)
    else:
        rows = tree_step_rows(trees, fmt, target)
    write_jsonl(ctx.path(STEP_LABELS), rows)
    summary = label_summary(rows) if rows else {"solutions": 0, "steps": 0}
    return {"labelled_solutions": summary["solutions"], "labelled_steps": summary["steps"],
            "artifacts": {"step_labels": str(ctx.path(STEP_LABELS))}}


def _completer_rows(ctx: RoundContext, trees: list[Tree], fmt, target: str) -> list[dict]:
    """Math-Shepherd's labels for the trees' answered solutions: ``prm.completions`` continuations
    from every step, on the round's engine."""
    from evomath.search.annotate import annotate_solutions
    from training.step_rewards import annotation_rows

    solutions = [(tree, tree.path(leaf)) for tree in trees for leaf in tree.answered() if leaf.answer is not None]
    if not solutions:
        return []
    with _search_env(ctx) as env:
        records, _ = annotate_solutions(solutions, env, ctx.config.prm.completions, progress=False)
    return annotation_rows(records, fmt, target)


def _is_empty(path: Path) -> bool:
    return not any(True for _ in read_jsonl(path))


def train_policy(ctx: RoundContext) -> dict:
    """SFT on the selected trajectories (with ``reward_model: value``, AlphaMath's value head trained
    jointly on the round's step Q); without any data, the round passes its policy on unchanged."""
    from evomath.models import resolve_model
    from training.sft import train_sft
    from training.value_head import train_value_head

    data = policy_data(ctx)
    if _is_empty(data):
        return {"policy_trained": 0, "artifacts": {}}
    engines.release()
    base = resolve_model(ctx.config.policy if ctx.config.sft_from == "base" else ctx.policy)
    if ctx.config.reward_model == "value" and not _is_empty(ctx.path(STEP_LABELS)):
        metrics = train_value_head(data, ctx.path(STEP_LABELS), base, ctx.path(POLICY), ctx.config.policy_training(),
                                   overwrite=True, step_format=ctx.config.search.step_format)
    else:
        metrics = train_sft(data, base, ctx.path(POLICY), ctx.config.sft, overwrite=True)
    return {"policy_trained": 1, "policy_examples": sum(1 for _ in read_jsonl(data))} | _numbers(metrics) | {
        "artifacts": {"policy": str(ctx.path(POLICY))}}


def sft_sources(ctx: RoundContext) -> list[Path]:
    """The SFT files a round's policy trains on: its own, or rounds 1..k's (``sft_data: all_rounds``)."""
    if ctx.config.sft_data == "round":
        return [ctx.path(SFT_DATA)]
    return [round_dir(ctx.config, j) / SFT_DATA for j in range(1, ctx.round)] + [ctx.path(SFT_DATA)]


def policy_data(ctx: RoundContext) -> Path:
    """The round's own SFT file, or the union of every round's so far written to ``SFT_UNION`` (a
    row selected again in a later round, the same prompt and completion, counts once)."""
    sources = sft_sources(ctx)
    if len(sources) == 1:
        return sources[0]
    rows = {}
    for path in sources:
        for row in read_jsonl(path) if path.exists() else ():
            rows.setdefault((row["prompt"], row["completion"]), row)
    write_jsonl(ctx.path(SFT_UNION), rows.values())
    return ctx.path(SFT_UNION)


def train_reward(ctx: RoundContext) -> dict:
    """The round's reward model starts from this round's policy (rStar); no data (or a round before
    ``ppm_train_from_round``) means no new one. A value head was trained with the policy already."""
    from evomath.models import resolve_model
    from training.ppm import train_ppm
    from training.step_rewards import train_step_reward

    kind = ctx.config.reward_model
    section = ctx.config.reward_training()
    data = ctx.path(PAIRS if ctx.config.reward_learns_from_pairs else STEP_LABELS)
    if section is None or ctx.round < ctx.config.ppm_train_from_round or not data.exists() or _is_empty(data):
        return {"ppm_trained": 0, "artifacts": {}}
    engines.release()
    policy = resolve_model(round_models(ctx)[0])
    common = {"overwrite": True, "step_format": ctx.config.search.step_format}
    if ctx.config.reward_learns_from_pairs:
        metrics = train_ppm(data, policy, ctx.path(PPM), section, kind=kind, **common)
    else:
        metrics = train_step_reward(data, policy, ctx.path(PPM), section, kind, **common)
    return {"ppm_trained": 1} | _numbers(metrics) | {"artifacts": {"ppm": str(ctx.path(PPM))}}


def reinforce(ctx: RoundContext) -> dict:
    """Math-Shepherd's step-level RL of the round's SFT policy on its training problems (``rl.enabled``),
    rewarded by the gold answers and, with ``rl.rewards: process``, by the round's reward model at
    every step's end (``training.rl``); with ``rl.buckets``, on the problems the round's bucket stage
    put in those buckets only. Off, without a reward model yet (process rewards), without a problem
    in those buckets, or stopped by the reward-hacking guard, the round keeps its SFT policy."""
    from evomath.models import resolve_model
    from training.rl import train_rl

    rl = ctx.config.rl
    policy, reward = round_models(ctx, rl=False)
    if not rl.enabled or (rl.rewards == "process" and reward is None):
        return {"rl_trained": 0, "artifacts": {}}
    problems = training_problems(ctx.config)
    if rl.buckets:
        from training.buckets import in_buckets

        by_id = {row["problem_id"]: row["bucket"] for row in read_jsonl(ctx.path(BUCKETS))}
        problems = in_buckets(problems, by_id, rl.buckets)
        if not problems:
            log.warning("round %d: no training problem in rl.buckets %s: the round keeps its SFT policy", ctx.round,
                        rl.buckets)
            return {"rl_trained": 0, "rl_problems": 0, "artifacts": {}}
    engines.release()
    metrics = train_rl(problems, resolve_model(policy), reward, ctx.path(POLICY_RL), rl,
                       _policy_format(ctx), progress=False, overwrite=True, curves=ctx.path(RL_CURVES))
    if metrics["stopped"]:
        log.warning("round %d: %s", ctx.round, metrics["stopped"])
    artifacts = {"curves": str(ctx.path(RL_CURVES))} | ({"policy_rl": str(ctx.path(POLICY_RL))} if metrics["saved"]
                                                         else {})
    return {"rl_trained": metrics["saved"], "rl_problems": len(problems),
            "reward_hacking": int(bool(metrics["stopped"]))} | _numbers(metrics) | {
        "stopped": metrics["stopped"], "artifacts": artifacts}


def round_models(ctx: RoundContext, rl: bool = True) -> tuple[str, str | None]:
    """The models this round leaves: what it trained (the RL policy over the SFT one, unless ``rl``
    is False), else what it started from. With a value head, the round's reward model is its SFT
    policy, which carries the head."""
    policy, rl_policy, ppm = ctx.path(POLICY), ctx.path(POLICY_RL), ctx.path(PPM)
    sft_policy = str(policy) if policy.is_dir() else ctx.policy
    new_policy = str(rl_policy) if rl and rl_policy.is_dir() else sft_policy
    if ctx.config.reward_model == "value" and (policy / "value_head").is_dir():
        return new_policy, sft_policy
    return new_policy, (str(ppm) if ppm.is_dir() else ctx.ppm)


def evaluate(ctx: RoundContext, policy: str | None = None, ppm: str | None = None) -> dict:
    """The round's policy (and PPM) on the configured benchmarks and methods (the greedy-only ones in
    the rounds ``eval.greedy_rounds`` names)."""
    from evaluation.run import evaluate_models

    new_policy, new_ppm = round_models(ctx)
    ev = ctx.config.eval
    if ev.greedy_rounds is not None and ctx.round not in ev.greedy_rounds:
        ev = ev.model_copy(update={"greedy_benchmarks": []})
    planned = ctx.config.model_copy(update={"engine": engine_config(ctx.config), "eval": ev})
    return evaluate_models(planned, policy or new_policy, ppm or new_ppm, ctx.path(EVAL),
                           scorer_device=device_plan(ctx.config).scorer_device, kind=ctx.config.reward_model)


@dataclass(frozen=True)
class Stage:
    """One stage of a round, the one place it is described: the Prefect tasks, the cache keys and
    the round's headline row are all derived from these."""

    name: str
    run: Callable[..., dict]  # (ctx, **kwargs) -> metrics, with "artifacts" among ``outputs``
    inputs: tuple[str, ...] = ()  # files and model directories of the round it reads (its key hashes them)
    outputs: tuple[str, ...] = ()  # what it writes
    headline: tuple[tuple[str, str], ...] = ()  # (metric, column) it adds to the round's row
    progress: str | None = None  # reports (done, total) through ``on_progress``: what it counts


REGISTRY: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("generate", generate, (), (TREES,), (("problems", "problems"), ("solve_rate", "solve_rate"),
                                               ("generated_tokens", "generated_tokens")), progress="generation"),
    Stage("extra_rollouts", extra_rollouts, (TREES,), (TREES_FINAL,), (("rescued", "rescued"),)),
    Stage("bucket", bucket, (TREES_FINAL,), (BUCKETS,),
          (("easy", "easy"), ("medium", "medium"), ("hard", "hard"), ("solved", "solved"))),
    Stage("select_sft", select_sft, (TREES_FINAL,), (SFT_DATA,),
          (("sft_examples", "sft_examples"), ("sft_avg_tokens", "sft_avg_tokens"),
           ("sft_distinct_share", "sft_distinct_share"), ("sft_wrong_step_share", "sft_wrong_step_share"))),
    Stage("reward_data", reward_data, (TREES_FINAL,), (PAIRS, STEP_LABELS),
          (("pairs", "ppm_pairs"), ("labelled_steps", "labelled_steps"))),
    Stage("train_policy", train_policy, (SFT_DATA, STEP_LABELS), (POLICY, SFT_UNION), (("train_loss", "sft_loss"),)),
    Stage("train_reward", train_reward, (PAIRS, STEP_LABELS, POLICY), (PPM,),
          (("train_loss", "ppm_loss"), ("heldout_accuracy", "pair_accuracy"),
           ("heldout_step_accuracy", "step_accuracy"))),
    Stage("reinforce", reinforce, (POLICY, PPM, BUCKETS), (POLICY_RL, RL_CURVES),
          (("gold_accuracy_last", "rl_accuracy"), ("prm_score_last", "rl_prm_score"))),
    Stage("evaluate", evaluate, (POLICY, PPM, POLICY_RL), (EVAL,)),
)}
STAGES = list(REGISTRY)  # the round's order


def _numbers(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# ---------------------------------------------------------------- resume


def stage_inputs(ctx: RoundContext, stage: str) -> list[Path]:
    """The files a stage's key hashes: its inputs in the round, and for a policy trained on every
    round's data, the earlier rounds' SFT files."""
    paths = [ctx.path(name) for name in REGISTRY[stage].inputs]
    if stage == "train_policy":
        paths += [path for path in sft_sources(ctx) if path not in paths]
    return paths


def stage_key(ctx: RoundContext, stage: str) -> str:
    """Hash of the stage, the config, the models it starts from and its input files' contents."""
    models = [model_fingerprint(ctx.policy), model_fingerprint(ctx.ppm) if ctx.ppm else None]
    digest = hashlib.sha256()
    digest.update(json.dumps([stage, ctx.round, ctx.policy, ctx.ppm, *models]).encode())
    digest.update(ctx.config.model_dump_json().encode())
    for path in stage_inputs(ctx, stage):
        digest.update(path.name.encode())
        digest.update(_file_hash(path).encode())
    return digest.hexdigest()


def _file_hash(path: Path) -> str:
    """A file's SHA-256; a model directory's fingerprint (every shard)."""
    if not path.exists():
        return "missing"
    if path.is_dir():
        return model_fingerprint(path)
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stage_record(directory: Path, stage: str) -> Path:
    """Where a finished stage's key and metrics are recorded (written last: it means finished)."""
    return directory / f"stage-{stage}.json"


def finished_stage(ctx: RoundContext, stage: str) -> dict | None:
    """The recorded metrics of a stage that already ran on the same inputs, else None."""
    record = stage_record(ctx.dir, stage)
    if not record.exists():
        return None
    saved = json.loads(record.read_text())
    return saved["metrics"] if saved.get("key") == stage_key(ctx, stage) else None


def run_stage(ctx: RoundContext, stage: str, **kwargs) -> dict:
    """Run one stage unless it already ran on the same inputs; record its metrics last."""
    cached = finished_stage(ctx, stage)
    if cached is not None:
        return cached
    key = stage_key(ctx, stage)
    start = time.perf_counter()
    metrics = REGISTRY[stage].run(ctx, **kwargs)
    metrics["stage_seconds"] = time.perf_counter() - start
    write_json(stage_record(ctx.dir, stage), {"stage": stage, "key": key, "metrics": metrics})
    fault_point("stage:done")
    return metrics


StageCallback = Callable[[int, str, dict], None]


def run_round(ctx: RoundContext, on_stage: StageCallback | None = None) -> dict:
    """Every stage in order (plain Python; the Prefect flow does the same through tasks)."""
    check_plan(ctx.config)
    results = {}
    for stage in STAGES:
        log.info("round %d: %s", ctx.round, stage)
        results[stage] = run_stage(ctx, stage)
        if on_stage:
            on_stage(ctx.round, stage, results[stage])
    engines.release()
    return results


def base_context(config: ExperimentConfig) -> RoundContext:
    """Round 0: the starting policy, evaluated so every later round has a baseline."""
    private_dir(experiment_dir(config))
    directory = round_dir(config, 0)
    directory.mkdir(parents=True, exist_ok=True)
    return RoundContext(config=config, round=0, dir=directory, policy=config.policy, ppm=None)


def evaluate_base(config: ExperimentConfig) -> dict:
    """Round 0 trains nothing, so its evaluate stage scores the starting policy."""
    return run_stage(base_context(config), "evaluate")


# What the loop produced in a round, as recorded by its stages: (stage, metric).
PRODUCED = (("bucket", "solved"), ("select_sft", "sft_examples"), ("select_sft", "sft_avg_tokens"),
            ("select_sft", "sft_distinct_share"), ("select_sft", "sft_wrong_step_share"))


def recorded_round(config: ExperimentConfig, k: int) -> dict:
    """What round k left on disk, for reports and plots: its evaluation summary rows, bucket
    counts, what its loop produced (``PRODUCED``) and minutes per stage (round 0 is the base
    model's evaluation)."""
    directory = round_dir(config, k)
    minutes, buckets, produced = {}, {}, {}
    for stage in STAGES:
        record = stage_record(directory, stage)
        if record.exists():
            metrics = json.loads(record.read_text())["metrics"]
            minutes[stage] = metrics.get("stage_seconds", 0.0) / 60
            if stage == "bucket":
                buckets = {b: metrics[b] for b in DIFFICULTIES if b in metrics}
            produced |= {metric: metrics[metric] for where, metric in PRODUCED if where == stage and metric in metrics}
    summary = directory / EVAL / "summary.json"
    rows = json.loads(summary.read_text()) if summary.exists() else []
    return {"round": k, "summary": rows, "buckets": buckets, "produced": produced, "minutes": minutes}


def run_evolution(config: ExperimentConfig, on_stage: StageCallback | None = None) -> list[dict]:
    """The base model's evaluation, then rounds 1..N, each from the last one's models."""
    check_plan(config)
    results = [{"evaluate": evaluate_base(config)}]
    if on_stage:
        on_stage(0, "evaluate", results[0]["evaluate"])
    for k in range(1, config.rounds + 1):
        results.append(run_round(round_context(config, k), on_stage))
    return results
