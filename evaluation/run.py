"""Evaluate methods on problems: one generation run per distinct need, then each method's choice.

Methods are grouped by the run they read (`Method.generation`): every sampling method shares
one best-of-N run of max-k samples, whose answered chains the PPM scores step by step in one
call; beam search and MCTS run once per setting; offline methods read saved trees (or this run's
MCTS trees) and generate nothing. Artifacts, under ``out_dir``:
``<benchmark>/<method>.jsonl`` (records), ``trees/<run>/<benchmark>.jsonl`` (searched trees, which
``--trees`` can read back for offline re-selection), ``summary.json`` and
``accuracy_vs_tokens.png``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

from evaluation import runs
from evaluation.benchmarks import label, load_suite
from evaluation.methods import GUIDE, MCTS, Method, Offline, Sampled, parse_methods
from evaluation.records import flat_metrics, make_record, summarize, write_records, write_summary
from evaluation.report import plot_accuracy_vs_tokens
from evaluation.runs import Context, Run
from evomath.config import ExperimentConfig, SandboxConfig, SearchConfig
from evomath.errors import InputError
from evomath.files import private_dir
from evomath.problems import subset
from evomath.search import SearchEnv
from evomath.tree import write_trees

log = logging.getLogger(__name__)

PLOT_NAME = "accuracy_vs_tokens.png"


# --- choosing and recording ---------------------------------------------------------------------


def method_records(spec: Method, run: Run, problems: Sequence, benchmark: str) -> list[dict]:
    """Seconds per question: the run's wall time (plus PPM scoring, for the methods that use it)
    over its problems; a method reading k of n shared samples is charged k/n of it."""
    seconds = run.seconds + run.scoring_seconds.get(spec.scored_by, 0.0)
    per_problem = seconds * spec.cost_share(run) / max(1, len(problems))
    records = []
    for i, problem in enumerate(problems):
        choice, tokens = spec.choose(run, i)
        records.append(make_record(benchmark, spec.name, problem, choice, tokens, per_problem))
    return records


# --- entry points -------------------------------------------------------------------------------


def reward_models(scorer) -> dict[str, object]:
    """Reward models by kind, ``GUIDE`` among them (the one beam search and MCTS follow): a mapping
    kind -> scorer as it is (its guide the PPM unless named), a single scorer as the PPM."""
    if scorer is None:
        return {}
    models = dict(scorer) if isinstance(scorer, Mapping) else {"ppm": scorer}
    if models and GUIDE not in models:
        models[GUIDE] = models.get("ppm", next(iter(models.values())))
    return {kind: runs.as_value_fn(model) for kind, model in models.items()}


def check_inputs(specs: Sequence[Method], scorer, trees, step_format: str) -> None:
    """Refuse, before any generation, a method whose inputs are missing or that cannot read the steps."""
    gated = [s.name for s in specs if getattr(s, "gate", None)]
    if gated and step_format != "natural":
        raise InputError(f"{', '.join(gated)} read natural-language steps, not {step_format} steps (a code step is "
                         "checked by running it): evaluate with --step-format natural or drop them")
    models = reward_models(scorer)
    missing: dict[str, list[str]] = {}
    for spec in specs:
        if spec.reward_model is not None and spec.reward_model not in models:
            # a missing PPM and a missing guide are one request: give a PPM
            missing.setdefault("ppm" if spec.reward_model == GUIDE else spec.reward_model, []).append(spec.name)
    for kind, names in missing.items():
        if kind == "ppm":
            raise InputError(f"{', '.join(names)} need a process preference model (--ppm DIR)")
        raise InputError(f"{', '.join(names)} need a {kind.upper()} (--reward-model {kind}=DIR)")
    if any(isinstance(s, Offline) for s in specs) and trees is None and not any(isinstance(s, MCTS) for s in specs):
        raise InputError("offline methods re-select from saved trees: give them (--trees PATH) or add an mcts method")


def generate_runs(specs: Sequence[Method], ctx: Context, trees, benchmark: str) -> dict[str, Run]:
    """One run per distinct generation, the engine's first (offline re-selection reads them last)."""
    groups: dict[str, list[Method]] = {}
    for spec in sorted(specs, key=lambda s: not s.generates):
        groups.setdefault(spec.generation, []).append(spec)
    saved = runs.offline_source(trees, benchmark) if trees is not None else None
    done: dict[str, Run] = {}
    for generation, group in groups.items():
        done[generation] = group[0].generate(ctx, group, done, saved)
    return done


def evaluate(
    problems: Sequence,
    methods: str | Sequence[str | Method],
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

    ``scorer``: the reward models (``reward_models``): a ``RewardScorer`` or any ValueFn as the PPM,
    or a mapping kind -> scorer, needed by RM-bon, RM-vote, offline-RM and (the guide) beam and mcts.
    ``trees``: saved trees for offline methods (default: this run's MCTS trees).
    """
    specs = parse_methods(methods)
    check_inputs(specs, scorer, trees, search_config.step_format)
    models = reward_models(scorer)
    env = SearchEnv(backend, fmt, search_config, sandbox, grader, models.get(GUIDE))
    ctx = Context(problems, env, progress, {k: v for k, v in models.items() if k != GUIDE})
    made = generate_runs(specs, ctx, trees, benchmark)
    records = [r for spec in specs for r in method_records(spec, made[spec.generation], problems, benchmark)]
    if out_dir is not None:
        write_records(out_dir, records)
        for run in made.values():
            if run.name != "offline":
                write_trees(Path(out_dir) / "trees" / run.name / f"{benchmark}.jsonl", [t for g in run.trees for t in g])
    return records


GREEDY = Sampled("greedy", "greedy")


def method_groups(specs: Sequence[Method], problems: Sequence, sampled_limit: int | None = None, seed: int = 0,
                  greedy_only: bool = False) -> list[tuple[list[Method], Sequence]]:
    """The methods of one benchmark, each group with the problems it runs on. Greedy is one chain a
    problem, so it can afford the many problems that resolve a few points; given ``sampled_limit``,
    every other method (sampling, beam search, MCTS, offline re-selection) runs on a seeded subset
    of them, so both are compared on the problems they share. A greedy-only benchmark (a
    generalisation check) runs greedy alone."""
    if greedy_only:
        return [([GREEDY], problems)]
    rest = [s for s in specs if s.generation != "greedy"]
    if sampled_limit is None or sampled_limit >= len(problems) or not rest:
        return [(list(specs), problems)]
    groups = [([s for s in specs if s.generation == "greedy"], problems), (rest, subset(list(problems), sampled_limit, seed))]
    return [group for group in groups if group[0]]


def evaluate_suite(
    suite: Mapping[str, Sequence],
    methods: str | Sequence[str | Method],
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
    sampled_limit: int | None = None,
    seed: int = 0,
    greedy_only: Iterable[str] = (),
) -> list[dict]:
    """Every benchmark of ``suite`` (name -> problems); writes records, ``summary.json`` and the
    accuracy-vs-tokens plot under ``out_dir`` and returns the summary rows. ``sampled_limit``,
    ``seed`` and ``greedy_only`` (benchmark names) choose each method's problems (``method_groups``)."""
    specs = parse_methods(methods)
    check_inputs(specs, scorer, trees, search_config.step_format)
    greedy_only = set(greedy_only)
    records = []
    for name, problems in suite.items():
        for group, chosen in method_groups(specs, problems, sampled_limit, seed, name in greedy_only):
            records += evaluate(chosen, group, backend, fmt, search_config, sandbox, grader, scorer, out_dir,
                                benchmark=name, trees=trees, progress=progress)
    rows = summarize(records)
    write_summary(Path(out_dir) / "summary.json", rows)
    plot_accuracy_vs_tokens(rows, Path(out_dir) / PLOT_NAME)
    return rows


def run_suite(
    suite: Mapping[str, Sequence],
    specs: Sequence[Method],
    backend,
    search_config: SearchConfig,
    sandbox_config: SandboxConfig,
    scorer,
    out_dir: str | Path,
    *,
    trees: str | Path | None = None,
    progress: bool = True,
    sampled_limit: int | None = None,
    seed: int = 0,
    greedy_only: Iterable[str] = (),
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
                              trees=trees, progress=progress, sampled_limit=sampled_limit, seed=seed,
                              greedy_only=greedy_only)


def evaluate_models(config: ExperimentConfig, policy: str, ppm: str | None, out_dir: str | Path,
                    scorer_device: str | None = None, kind: str = "ppm") -> dict:
    """The evaluate stage: ``config.eval`` (benchmarks x methods) for a policy and PPM, with
    ``config.eval_search``, on the process's shared engine (the PPM on ``scorer_device``, default:
    the first GPU, else the CPU). ``ppm`` is the round's reward model, of ``kind``; methods that need
    another kind, or any before the first one exists, are skipped with a warning. Returns flat
    metrics plus ``artifacts``."""
    from evomath import engines
    from evomath.models import resolve_model
    from evomath.scoring import load_scorer

    specs = parse_methods(config.eval.methods)
    available = {kind, GUIDE} if ppm is not None else set()
    unserved = [s.name for s in specs if s.reward_model is not None and s.reward_model not in available]
    if unserved:
        log.warning("no %s yet: skipping %s", kind.upper(), ", ".join(unserved))
        specs = [s for s in specs if s.name not in unserved]
    ev = config.eval
    suite = load_suite([*ev.benchmarks, *ev.greedy_benchmarks], limit=ev.limit, seed=ev.seed)
    greedy_only = {label(name) for name in ev.greedy_benchmarks}
    out_dir = Path(out_dir)
    with ExitStack() as stack:
        scorer = None
        if any(s.needs_ppm for s in specs):
            loaded = load_scorer(resolve_model(ppm), kind=kind, device=scorer_device)
            stack.callback(loaded.close)
            scorer = {kind: loaded, GUIDE: loaded}  # the round's reward model (of its kind) guides too
        generates = greedy_only or any(s.generates for s in specs)
        backend = engines.get_backend(policy, config.engine) if generates else None
        rows = run_suite(suite, specs, backend, config.eval_search, config.sandbox, scorer, out_dir, progress=False,
                         sampled_limit=ev.sampled_limit, seed=ev.seed, greedy_only=greedy_only)
    artifacts = {"summary": str(out_dir / "summary.json"), "plot": str(out_dir / PLOT_NAME), "records": str(out_dir)}
    return flat_metrics(rows) | {"artifacts": artifacts}
