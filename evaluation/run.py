"""Evaluate methods on problems: one generation run per distinct need, then each method's choice.

Methods are grouped by the run they read (`MethodSpec.generation`): every sampling method shares
one best-of-N run of max-k samples, whose answered chains the PPM scores step by step in one
call; beam search and MCTS run once per setting; offline methods read saved trees (or this run's
MCTS trees) and generate nothing. Artifacts, under ``out_dir``:
``<benchmark>/<method>.jsonl`` (records), ``trees/<run>/<benchmark>.jsonl`` (searched trees, which
``--trees`` can read back for offline re-selection), ``summary.json`` and
``accuracy_vs_tokens.png``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

from evaluation.benchmarks import load_suite
from evaluation.methods import SAMPLING_KINDS, MethodSpec, parse_methods
from evaluation.records import flat_metrics, make_record, summarize, write_records, write_summary
from evaluation.report import plot_accuracy_vs_tokens
from evaluation.select import (
    Choice,
    chains,
    choose_beam,
    choose_mcts,
    choose_offline,
    choose_samples,
    is_answer,
)
from evomath.config import ExperimentConfig, SandboxConfig, SearchConfig
from evomath.files import private_dir
from evomath.scoring import prefix_scores
from evomath.search import SearchEnv, beam_search, best_of_n, greedy, mcts
from evomath.tree import Tree, read_trees, write_trees

log = logging.getLogger(__name__)

PLOT_NAME = "accuracy_vs_tokens.png"
SEARCH_SEPARATOR = "#"  # MCTS search s of problem p runs as problem "p#s" (its own seeds)


@dataclass
class Run:
    """One generation's trees, per problem in problem order, and what it cost."""

    name: str
    trees: list[list[Tree]]
    seconds: float = 0.0  # wall time of the batched run
    scoring_seconds: float = 0.0  # PPM scoring after the run (sample chains, offline answers)
    samples: int = 1
    ppm: list[dict[tuple[int, int], float]] = field(default_factory=list)  # offline-ppm answer scores


@dataclass
class Context:
    problems: Sequence
    env: SearchEnv
    progress: bool


def as_value_fn(scorer) -> Callable | None:
    """A PPMScorer (itself a ValueFn, kept whole for its one-pass ``score_prefixes``), an object
    with ``.score``, or a plain ValueFn."""
    if scorer is None or callable(scorer):
        return scorer
    return scorer.score


# --- generation runs ----------------------------------------------------------------------------


def run_greedy(ctx: Context) -> Run:
    trees, stats = greedy(ctx.problems, ctx.env, progress=ctx.progress)
    return Run("greedy", [[t] for t in trees], stats.seconds)


def run_samples(ctx: Context, n: int, score: bool) -> Run:
    trees, stats = best_of_n(ctx.problems, replace(ctx.env, value_fn=None), n, progress=ctx.progress)
    run = Run(f"samples@{n}", [[t] for t in trees], stats.seconds, samples=n)
    if score:
        run.scoring_seconds = score_chains(trees, ctx.env.value_fn)
    return run


def score_chains(trees: Sequence[Tree], value_fn: Callable) -> float:
    """Score every step of every answered chain (stored as the nodes' priors), so min-step and
    last-step aggregation both have what they need; returns the seconds it took."""
    began = time.perf_counter()
    answered = [(t, chain) for t in trees for chain in chains(t) if is_answer(chain[-1])]
    items = [(t.question, [n.text for n in chain]) for t, chain in answered]
    for (_, chain), scores in zip(answered, prefix_scores(value_fn, items) if items else [], strict=True):
        for node, score in zip(chain, scores, strict=True):
            node.prior = score
    return time.perf_counter() - began


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


def load_offline(ctx: Context, source: Iterable[Tree], where: str, score: bool) -> Run:
    """Saved trees matched to the problems by id; a run's cost is what the trees recorded."""
    by_id: dict[str, list[Tree]] = {}
    for tree in source:
        by_id.setdefault(tree.problem_id, []).append(tree)
    grouped = [by_id.get(p.id, []) for p in ctx.problems]
    if not any(grouped):
        raise ValueError(f"no saved tree in {where} matches a problem of this benchmark")
    seconds = sum(t.meta.get("seconds", 0.0) for trees in grouped for t in trees)
    run = Run("offline", grouped, seconds)
    if score:
        run.ppm, run.scoring_seconds = score_answers(grouped, ctx.env.value_fn)
    return run


def score_answers(grouped: list[list[Tree]], value_fn: Callable) -> tuple[list[dict], float]:
    """PPM scores of every answer in saved trees, in one call, kept beside the trees (a prior
    would change the nodes' Q, which offline-q reads)."""
    began = time.perf_counter()
    keys = [(i, j, n) for i, trees in enumerate(grouped) for j, t in enumerate(trees) for n in t.answered() if is_answer(n)]
    scores = value_fn([(grouped[i][j].question, grouped[i][j].steps_text(n)) for i, j, n in keys]) if keys else []
    out: list[dict] = [{} for _ in grouped]
    for (i, j, node), score in zip(keys, scores, strict=True):
        out[i][j, node.id] = float(score)
    return out, time.perf_counter() - began


# --- choosing and recording ---------------------------------------------------------------------


def choose(spec: MethodSpec, run: Run, index: int) -> tuple[Choice, int]:
    """The method's choice on one problem and the tokens it spent."""
    trees = run.trees[index]
    if spec.kind in SAMPLING_KINDS or spec.kind == "greedy":
        used = chains(trees[0])[: spec.k]
        return choose_samples(spec, trees[0]), sum(n.num_tokens for chain in used for n in chain)
    tokens = sum(t.meta.get("tokens", 0) for t in trees)
    if spec.kind == "beam":
        return choose_beam(trees[0]), tokens
    if spec.kind == "mcts":
        return choose_mcts(spec, trees), tokens
    return choose_offline(spec, trees, run.ppm[index] if run.ppm else None), tokens


def method_records(spec: MethodSpec, run: Run, problems: Sequence, benchmark: str) -> list[dict]:
    """Seconds per question: the run's wall time (plus PPM scoring, for the methods that use it)
    over its problems; a method reading k of n shared samples is charged k/n of it."""
    seconds = run.seconds + (run.scoring_seconds if spec.needs_ppm else 0.0)
    share = min(spec.k, run.samples) / run.samples if spec.kind in SAMPLING_KINDS else 1.0
    per_problem = seconds * share / max(1, len(problems))
    records = []
    for i, problem in enumerate(problems):
        choice, tokens = choose(spec, run, i)
        records.append(make_record(benchmark, spec.name, problem, choice, tokens, per_problem))
    return records


# --- entry points -------------------------------------------------------------------------------


def check_inputs(specs: Sequence[MethodSpec], scorer, trees) -> None:
    """Refuse, before any generation, a method whose inputs are missing."""
    needing = [s.name for s in specs if s.needs_ppm]
    if needing and scorer is None:
        raise ValueError(f"{', '.join(needing)} need a process preference model (--ppm DIR)")
    if any(s.kind == "offline" for s in specs) and trees is None and not any(s.kind == "mcts" for s in specs):
        raise ValueError("offline methods re-select from saved trees: give them (--trees PATH) or add an mcts method")


def offline_source(trees, benchmark: str) -> tuple[list[Tree], str]:
    """Trees from a JSONL file, or ``<dir>/<benchmark>.jsonl`` (what ``trees/<run>/`` holds)."""
    path = Path(trees)
    if path.is_dir():
        path = path / f"{benchmark}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no saved trees at {path}")
    return list(read_trees(path)), str(path)


def generate_runs(specs: Sequence[MethodSpec], ctx: Context, trees, benchmark: str) -> dict[str, Run]:
    runs: dict[str, Run] = {}
    sampling = [s for s in specs if s.kind in SAMPLING_KINDS]
    for spec in specs:
        if spec.generation in runs or spec.kind == "offline":
            continue
        if spec.kind == "greedy":
            runs["greedy"] = run_greedy(ctx)
        elif spec.kind in SAMPLING_KINDS:
            n = max(s.k for s in sampling)
            runs["samples"] = run_samples(ctx, n, score=any(s.needs_ppm for s in sampling))
        elif spec.kind == "beam":
            runs[spec.generation] = run_beam(ctx, *spec.beam)
        else:
            runs[spec.generation] = run_mcts(ctx, spec.searches)
    offline = [s for s in specs if s.kind == "offline"]
    if offline:
        if trees is None:
            first_mcts = next(s.generation for s in specs if s.kind == "mcts")
            source, where = [t for group in runs[first_mcts].trees for t in group], first_mcts
        else:
            source, where = offline_source(trees, benchmark)
        runs["offline"] = load_offline(ctx, source, where, score=any(s.needs_ppm for s in offline))
    return runs


def evaluate(
    problems: Sequence,
    methods: str | Sequence[str | MethodSpec],
    backend,
    fmt,
    search_config: SearchConfig,
    sandbox,
    grader,
    scorer=None,
    out_dir: str | Path | None = None,
    *,
    benchmark: str = "problems",
    trees: str | Path | None = None,
    progress: bool = True,
) -> list[dict]:
    """Per-problem records of every method on ``problems``; written under ``out_dir`` when given.

    ``scorer``: the PPM (a ``PPMScorer`` or any ValueFn), needed by ppm-*, beam, mcts and
    offline-ppm. ``trees``: saved trees for offline methods (default: this run's MCTS trees).
    """
    specs = parse_methods(methods)
    check_inputs(specs, scorer, trees)
    ctx = Context(problems, SearchEnv(backend, fmt, search_config, sandbox, grader, as_value_fn(scorer)), progress)
    runs = generate_runs(specs, ctx, trees, benchmark)
    records = [r for spec in specs for r in method_records(spec, runs[spec.generation], problems, benchmark)]
    if out_dir is not None:
        write_records(out_dir, records)
        for run in runs.values():
            if run.name != "offline":
                write_trees(Path(out_dir) / "trees" / run.name / f"{benchmark}.jsonl", [t for g in run.trees for t in g])
    return records


def evaluate_suite(
    suite: Mapping[str, Sequence],
    methods: str | Sequence[str | MethodSpec],
    backend,
    fmt,
    search_config: SearchConfig,
    sandbox,
    grader,
    scorer=None,
    out_dir: str | Path = "eval",
    *,
    trees: str | Path | None = None,
    progress: bool = True,
) -> list[dict]:
    """Every benchmark of ``suite`` (name -> problems); writes records, ``summary.json`` and the
    accuracy-vs-tokens plot under ``out_dir`` and returns the summary rows."""
    specs = parse_methods(methods)
    check_inputs(specs, scorer, trees)
    records = []
    for name, problems in suite.items():
        records += evaluate(problems, specs, backend, fmt, search_config, sandbox, grader, scorer, out_dir,
                            benchmark=name, trees=trees, progress=progress)
    rows = summarize(records)
    write_summary(Path(out_dir) / "summary.json", rows)
    plot_accuracy_vs_tokens(rows, Path(out_dir) / PLOT_NAME)
    return rows


def run_suite(
    suite: Mapping[str, Sequence],
    specs: Sequence[MethodSpec],
    backend,
    search_config: SearchConfig,
    sandbox_config: SandboxConfig,
    scorer,
    out_dir: str | Path,
    *,
    trees: str | Path | None = None,
    progress: bool = True,
) -> list[dict]:
    """``evaluate_suite`` with the step format, sandbox and grader built around ``backend``
    (None when only offline methods run: they generate nothing)."""
    from evomath.formats import make_format
    from evomath.grading import Grader
    from evomath.sandbox import Sandbox

    with ExitStack() as stack:
        fmt = sandbox = grader = None
        if backend is not None:
            fmt = make_format(search_config.step_format, search_config.prompt_style, chat=backend.chat_prompt)
            if search_config.step_format == "code":
                hide = [private_dir(out_dir).resolve()]  # the records carry every gold answer
                sandbox = stack.enter_context(Sandbox(sandbox_config, hide=hide))
            grader = stack.enter_context(Grader())
        return evaluate_suite(suite, specs, backend, fmt, search_config, sandbox, grader, scorer, out_dir,
                              trees=trees, progress=progress)


def evaluate_models(config: ExperimentConfig, policy: str, ppm: str | None, out_dir: str | Path,
                    scorer_device: str | None = None) -> dict:
    """The evaluate stage: ``config.eval`` (benchmarks x methods) for a policy and PPM, with
    ``config.eval_search``, on the process's shared engine (the PPM on ``scorer_device``, default:
    the first GPU, else the CPU). Methods that need a PPM are skipped (with a warning) when there is
    none yet. Returns flat metrics plus ``artifacts``."""
    from evomath import engines
    from evomath.models import resolve_model
    from evomath.scoring import load_scorer

    specs = parse_methods(config.eval.methods)
    if ppm is None and any(s.needs_ppm for s in specs):
        log.warning("no PPM yet: skipping %s", ", ".join(s.name for s in specs if s.needs_ppm))
        specs = [s for s in specs if not s.needs_ppm]
    suite = load_suite(config.eval.benchmarks, limit=config.eval.limit, seed=config.eval.seed)
    out_dir = Path(out_dir)
    with ExitStack() as stack:
        scorer = None
        if any(s.needs_ppm for s in specs):
            scorer = load_scorer(resolve_model(ppm), device=scorer_device)
            stack.callback(scorer.close)
        backend = engines.get_backend(policy, config.engine) if any(s.kind != "offline" for s in specs) else None
        rows = run_suite(suite, specs, backend, config.eval_search, config.sandbox, scorer, out_dir, progress=False)
    artifacts = {"summary": str(out_dir / "summary.json"), "plot": str(out_dir / PLOT_NAME), "records": str(out_dir)}
    return flat_metrics(rows) | {"artifacts": artifacts}
