"""``evomath search``: run one search method over a problem file and write its trees."""

from __future__ import annotations

import json
from pathlib import Path

from evomath.config import add_section_flags, add_set_flag
from evomath.errors import InputError
from evomath.search import METHODS


def add_search_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "search",
        help="search problems with MCTS, step beam search, best-of-N or greedy; write trees as JSONL",
        description="Search every problem with one method and write the trees to OUT/trees.jsonl "
        "(appended as each problem finishes) and the totals to OUT/stats.json. Defaults follow "
        "rStar-Math's data generation (16 rollouts, 12 candidates, c=2); --config sets them from a YAML "
        "file, and the search flags below (named like its search: fields) and --set override it.",
    )
    parser.add_argument("--method", choices=METHODS, default="mcts")
    parser.add_argument("--problems", required=True,
                        help="benchmark name (gsm8k, math500, demo_test, ...) or a JSONL file")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--model", default=None, help="policy (default: the config's, smollm2-135m)")
    parser.add_argument("--ppm", default=None, help="PPM directory: the value function (MCTS priors, beam scores)")
    parser.add_argument("--config", default=None, help="an ExperimentConfig YAML (its search/engine/sandbox sections)")
    parser.add_argument("--limit", type=int, default=None, help="search a seeded random subset of this size")
    add_section_flags(parser, "search")
    add_set_flag(parser)
    parser.set_defaults(func=run_search_command)


def run_search_command(args) -> int:
    from evomath.backends import make_backend
    from evomath.config import ExperimentConfig, config_from_args, load_config
    from evomath.files import private_dir
    from evomath.formats import make_format
    from evomath.grading import Grader
    from evomath.problems import load_benchmark
    from evomath.sandbox import Sandbox
    from evomath.search import SearchEnv, run_search
    from evomath.tree import append_trees

    config = config_from_args(args, load_config(args.config) if args.config else ExperimentConfig())
    search = config.search
    problems = load_benchmark(args.problems, limit=args.limit, seed=search.seed)
    value_fn = None
    if args.ppm:
        from evomath.scoring import load_scorer

        value_fn = load_scorer(args.ppm)
    if not problems:
        raise InputError(f"{args.problems}: no problem to search")
    # One engine in this process: in-process on a CPU, like the stages (see prepare_environment).
    backend = make_backend(args.model or config.policy, config.engine, in_process=True)
    private_dir(args.out)
    trees_path = args.out / "trees.jsonl"
    trees_path.unlink(missing_ok=True)  # only once the model has loaded: a bad --model destroys nothing
    try:
        fmt = make_format(search.step_format, search.prompt_style, chat=backend.chat_prompt)
        with Sandbox(config.sandbox, hide=[args.out.resolve()]) as sandbox, Grader() as grader:
            env = SearchEnv(backend, fmt, search, sandbox, grader, value_fn)
            trees, stats = run_search(args.method, problems, env, on_tree_done=lambda tree: append_trees(trees_path, [tree]))
    finally:
        backend.close()
    _print_results(trees, stats)
    (args.out / "stats.json").write_text(json.dumps(stats.to_dict(), indent=2))
    return 0


def _print_results(trees, stats) -> None:
    solved = 0
    for tree in trees:
        answers = tree.answered()
        correct = sum(bool(n.correct) for n in answers)
        solved += correct > 0
        print(f"{tree.problem_id:24s} answers {len(answers):3d}  correct {correct:3d}  "
              f"nodes {len(tree.nodes):4d}  gold {tree.gold}")
    print(
        f"\n{len(trees)} problems, {solved} with a correct answer; {stats.rollouts} rollouts, "
        f"{stats.generated_tokens} generated tokens in {stats.seconds:.1f} s "
        f"({stats.tokens_per_second:.1f} tok/s, {stats.rollouts / max(stats.seconds, 1e-9):.2f} rollouts/s)"
    )


def add_annotate_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "annotate",
        help="Math-Shepherd's process annotation: step labels from N continuations of every step",
        description="Sample --samples solutions per problem with the policy, then --completions continuations from "
        "each of their steps (the completer is the policy); a step's hard label is 1 if any continuation reaches "
        "the gold answer, its soft label the fraction that do. Records go to OUT/annotations.jsonl as each problem "
        "finishes; a rerun with the same settings and model skips annotated problems. `evomath data steps "
        "--annotations` turns them into PRM training rows.",
    )
    parser.add_argument("--problems", required=True, help="benchmark name (demo_train:1-2, gsm8k_train, ...) or JSONL")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--model", default=None, help="policy and completer (default: the config's)")
    parser.add_argument("--config", default=None, help="an ExperimentConfig YAML (search, engine, sandbox, prm)")
    parser.add_argument("--limit", type=int, default=None, help="a seeded random subset of this size")
    add_section_flags(parser, "prm", ["samples", "completions"])
    add_section_flags(parser, "search", ["step_format", "prompt_style", "temperature", "max_step_tokens", "max_depth",
                                         "force_final_answer", "concurrent_problems", "seed"])
    add_set_flag(parser)
    parser.set_defaults(func=run_annotate_command)


def run_annotate_command(args) -> int:
    import hashlib

    from evomath.backends import make_backend
    from evomath.config import ExperimentConfig, config_from_args, load_config
    from evomath.files import append_jsonl, private_dir, read_jsonl, resume_jsonl
    from evomath.formats import make_format
    from evomath.grading import Grader
    from evomath.models import model_fingerprint, resolve_model
    from evomath.problems import load_benchmark
    from evomath.sandbox import Sandbox
    from evomath.search import SearchEnv
    from evomath.search.annotate import annotate

    config = config_from_args(args, load_config(args.config) if args.config else ExperimentConfig())
    search, prm = config.search, config.prm
    problems = load_benchmark(args.problems, limit=args.limit, seed=search.seed)
    if not problems:
        raise InputError(f"{args.problems}: no problem to annotate")
    model = resolve_model(args.model or config.policy)
    key = hashlib.sha256(json.dumps([search.model_dump(mode="json"), prm.samples, prm.completions,
                                     model_fingerprint(model)]).encode()).hexdigest()
    out = private_dir(args.out) / "annotations.jsonl"
    kept = resume_jsonl(out)
    done = {r["problem_id"] for r in kept if r.get("key") == key}
    if any(r.get("key") != key for r in kept):
        raise InputError(f"{out} holds annotations made with other settings or another model; use another --out")
    todo = [p for p in problems if p.id not in done]
    if not todo:
        print(f"{len(done)} problems already annotated in {out}")
        return 0
    backend = make_backend(model, config.engine, in_process=True)
    try:
        fmt = make_format(search.step_format, search.prompt_style, chat=backend.chat_prompt)
        with Sandbox(config.sandbox, hide=[args.out.resolve()]) as sandbox, Grader() as grader:
            env = SearchEnv(backend, fmt, search, sandbox, grader)
            _, sampling, completing = annotate(
                todo, env, samples=prm.samples, completions=prm.completions,
                on_problem_done=lambda rows: append_jsonl(out, [dict(r, key=key) for r in rows]))
    finally:
        backend.close()
    records = list(read_jsonl(out))
    steps = sum(len(r["steps"]) for r in records)
    print(f"{len({r['problem_id'] for r in records})} problems, {len(records)} solutions, {steps} labelled steps in {out}")
    print(f"sampling: {sampling.generated_tokens} tokens in {sampling.seconds:.1f} s; completer: "
          f"{completing.generated_tokens} tokens in {completing.seconds:.1f} s ({completing.tokens_per_second:.1f} tok/s)")
    return 0

