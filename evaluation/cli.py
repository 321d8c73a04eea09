"""``evomath evaluate``: methods on benchmarks, a table on stdout, records and a plot on disk.

Every input is checked before the engine starts (it takes a while): method and benchmark names,
the PPM directory, saved trees. One policy backend serves the whole run.
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack
from pathlib import Path

from evaluation.methods import valid_forms
from evomath.config import SearchConfig, add_section_flags, add_set_flag
from evomath.errors import InputError


def add_evaluate_command(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a policy (and PPM) on benchmarks with greedy, voting, best-of-N, beam search, MCTS",
        description="Run evaluation methods on benchmarks; print a table (accuracy, seconds per question, "
        "steps, solutions, tokens per question, pass@k) and write per-problem records, summary.json and "
        "accuracy_vs_tokens.png under --out. Sampling methods share one best-of-N run of max-k samples per "
        "problem. Seconds per question are the batched run's wall time divided by its problems.",
        epilog=f"methods:\n{valid_forms()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--benchmark", action="append", metavar="NAME",
                   help="gsm8k, math500, aime24, amc23, demo_test, ..., a JSONL path or hf:owner/name[:split]; "
                   "repeatable or a comma list (default: the config's eval.benchmarks, and its eval.greedy_benchmarks "
                   "with greedy alone)")
    p.add_argument("--methods", help="comma list, e.g. greedy,maj@8,ppm-bon@8,beam-3x5,mcts (default: the config's)")
    p.add_argument("--policy", help="policy model: embedded name, directory, hub id or models:/ URI (default: the config's)")
    p.add_argument("--ppm", help="process preference model directory or models:/ URI (ppm-*, beam, mcts, offline-ppm)")
    p.add_argument("--reward-model", action="append", default=[], metavar="KIND=DIR",
                   help="another reward model, e.g. prm=runs/x/round-3/prm (kinds: ppm, prm, value, orm, pqm); "
                   "repeatable: RM-bon@K and RM-vote@K of every kind read the same samples")
    p.add_argument("--ppm-backend", choices=("transformers", "vllm"), default="transformers",
                   help="how the reward models are served (default transformers)")
    p.add_argument("--config", help="experiment YAML (ExperimentConfig): engine, sandbox, eval_search, eval; "
                   "the flags below override it")
    p.add_argument("--out", help="output directory (default: <run_dir>/<name>/eval from the config)")
    p.add_argument("--trees", help="saved trees for offline-* methods: a JSONL file or a folder of <benchmark>.jsonl "
                   "(an earlier run's <out>/trees/mcts@S); default: this run's MCTS trees")
    p.add_argument("--question-field", help="question field of a JSONL benchmark (default: question|problem)")
    p.add_argument("--answer-field", help="answer field of a JSONL benchmark (default: answer|final_answer)")
    p.add_argument("--id-field", help="id field of a JSONL benchmark (default: id|unique_id|problem_id, else line)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_section_flags(p, "eval", ["limit", "sampled_limit", "seed"])  # --seed also seeds the sampling (eval_search.seed)
    add_section_flags(p, "eval_search", [f for f in SearchConfig.model_fields if f != "seed"])
    add_set_flag(p)
    p.set_defaults(func=cmd_evaluate)


def load_reward_model(spec: str, kind: str, backend: str, step_format: str):
    """A reward model's scorer; a directory of another kind, or trained on another step format, is refused."""
    from evomath.models import resolve_model
    from evomath.scoring import load_scorer, reward_marker

    path = resolve_model(spec)
    trained_on = reward_marker(path, kind).get("format")
    if trained_on and trained_on != step_format:
        raise InputError(f"{kind.upper()} {spec} was trained on {trained_on} steps; evaluate with --step-format "
                         f"{trained_on}")
    return load_scorer(path, backend=backend if kind != "value" else "transformers", kind=kind)


def reward_model_args(args) -> dict[str, str]:
    """kind -> directory from --ppm and every --reward-model KIND=DIR."""
    from evomath.scoring import KINDS

    models = {"ppm": args.ppm} if args.ppm else {}
    for item in args.reward_model:
        kind, sep, path = item.partition("=")
        if not sep or kind not in KINDS or not path:
            raise InputError(f"--reward-model {item!r}: expected KIND=DIR with KIND one of {', '.join(KINDS)}")
        models[kind] = path
    return models


def cmd_evaluate(args) -> int:
    from evaluation.benchmarks import label, load_suite, split_names
    from evaluation.methods import GUIDE, parse_methods
    from evaluation.report import format_table
    from evaluation.run import check_inputs, run_suite
    from evomath.backends import make_backend
    from evomath.config import ExperimentConfig, config_from_args, given_flag, load_config

    config = config_from_args(args, load_config(args.config) if args.config else ExperimentConfig())
    specs = parse_methods(args.methods or config.eval.methods)
    greedy_only = [] if args.benchmark else config.eval.greedy_benchmarks  # the config's greedy-only ones with its own
    suite = load_suite(
        split_names(args.benchmark) or [*config.eval.benchmarks, *greedy_only], limit=config.eval.limit,
        seed=config.eval.seed, question_field=args.question_field, answer_field=args.answer_field, id_field=args.id_field,
    )
    search = config.eval_search
    if given_flag(args, "eval.seed") is not None:
        search = search.model_copy(update={"seed": config.eval.seed})
    out = Path(args.out) if args.out else Path(config.run_dir) / config.name / "eval"
    with ExitStack() as stack:
        scorers = {}
        for kind, path in reward_model_args(args).items():
            scorers[kind] = load_reward_model(path, kind, args.ppm_backend, search.step_format)
            stack.callback(scorers[kind].close)
        if scorers:
            scorers[GUIDE] = scorers.get(config.reward_model, next(iter(scorers.values())))
        scorer = scorers or None
        check_inputs(specs, scorer, args.trees, search.step_format)
        backend = None
        if any(s.generates for s in specs):  # offline methods only read saved trees
            # In-process on a CPU, like the stages: the policy is this process's only in-process
            # engine (a vLLM-served PPM keeps vLLM's own processes), so its shutdown is safe.
            backend = make_backend(args.policy or config.policy, config.engine, in_process=True)
            stack.callback(backend.close)
        rows = run_suite(suite, specs, backend, search, config.sandbox, scorer, out, trees=args.trees,
                         progress=not args.no_progress, sampled_limit=config.eval.sampled_limit, seed=config.eval.seed,
                         greedy_only=[label(name) for name in greedy_only])
    print(format_table(rows))
    print(f"\nrecords, summary.json and accuracy_vs_tokens.png in {out}")
    return 0
