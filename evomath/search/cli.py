"""``evomath search``: run one search method over a problem file and write its trees."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from evomath.formats import PROMPT_STYLES
from evomath.search import METHODS


def add_search_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "search",
        help="search problems with MCTS, step beam search, best-of-N or greedy; write trees as JSONL",
        description="Search every problem with one method and write the trees to OUT/trees.jsonl "
        "(appended as each problem finishes) and the totals to OUT/stats.json. Defaults follow "
        "rStar-Math's data generation (16 rollouts, 12 candidates, c=2); --config sets them from a YAML "
        "file and the flags below override it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--method", choices=METHODS, default="mcts")
    parser.add_argument("--problems", required=True,
                        help="benchmark name (gsm8k, math500, demo_test, ...) or a JSONL file")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--model", default=None, help="policy (default: the config's, smollm2-135m)")
    parser.add_argument("--ppm", default=None, help="PPM directory: the value function (MCTS priors, beam scores)")
    parser.add_argument("--config", default=None, help="an ExperimentConfig YAML (its search/engine/sandbox sections)")
    parser.add_argument("--limit", type=int, default=None, help="search a seeded random subset of this size")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--format", dest="step_format", choices=["code", "natural"], default=None)
    parser.add_argument("--prompt-style", choices=PROMPT_STYLES, default=None)
    parser.add_argument("--rollouts", type=int, default=None, help="MCTS rollouts per problem")
    parser.add_argument("--n-candidates", type=int, default=None, help="candidate steps per expansion")
    parser.add_argument("--n-samples", type=int, default=None, help="best-of-N: solutions per problem")
    parser.add_argument("--beam", default=None, metavar="B1xB2", help="beam search widths, e.g. 3x5")
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--max-depth", type=int, default=None)
    parser.add_argument("--max-step-tokens", type=int, default=None)
    parser.add_argument("--c-puct", type=float, default=None)
    parser.set_defaults(func=run_search_command)


def _search_config(args, base):
    updates = {
        name: getattr(args, name)
        for name in ("step_format", "prompt_style", "rollouts", "n_candidates", "n_samples", "temperature",
                     "max_depth", "max_step_tokens", "c_puct", "seed")
        if getattr(args, name) is not None
    }
    if args.beam:
        width, _, expand = args.beam.partition("x")
        updates |= {"beam_width": int(width), "beam_expand": int(expand)}
    return base.model_copy(update=updates)


def run_search_command(args) -> int:
    from evomath.backends import make_backend
    from evomath.config import ExperimentConfig, load_config
    from evomath.files import private_dir
    from evomath.formats import make_format
    from evomath.grading import Grader
    from evomath.problems import load_benchmark
    from evomath.sandbox import Sandbox
    from evomath.search import SearchEnv, run_search
    from evomath.tree import append_trees

    config = load_config(args.config) if args.config else ExperimentConfig()
    search = _search_config(args, config.search)
    problems = load_benchmark(args.problems, limit=args.limit, seed=search.seed)
    value_fn = None
    if args.ppm:
        from evomath.scoring import load_scorer

        value_fn = load_scorer(args.ppm)
    private_dir(args.out)
    trees_path = args.out / "trees.jsonl"
    trees_path.unlink(missing_ok=True)
    # One engine in this process: in-process on a CPU, like the stages (see prepare_environment).
    backend = make_backend(args.model or config.policy, config.engine, in_process=True)
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
