"""Math-Shepherd's completer against raw generation of the same tokens, side by side in one run.

    python benchmarks/annotation_throughput.py [--model smollm2-135m] [--problems 64] [--samples 4] \
        [--completions 4] [--repeats 2]

The completer (``evomath.search.annotate``) grows every continuation step by step through the
search engine: one ``generate`` call per step of every open continuation, each prompt re-read from
vLLM's prefix cache, code run and answers graded between calls. The raw side asks vLLM once for
exactly the same sequences: the same prompts (each step's prefix), the same number of
continuations per prefix, each forced to the same length as the completer's (``min_tokens`` =
``max_tokens`` = its token count), in one call. The ratio completer tokens/s / raw tokens/s is what
the step-wise loop costs against the engine's best on this job (target >= 0.9). Runs alternate
(completer, raw, completer, raw) so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def completer_job(env, problems, samples: int):
    """The sampled solutions the completer starts from: (tree, path) per answered solution."""
    from evomath.search import best_of_n
    from evomath.search.annotate import solution_chains

    trees, _ = best_of_n(problems, env, samples, progress=False)
    return [(tree, chain) for tree in trees for chain in solution_chains(tree)]


def run_completer(env, solutions, completions: int):
    """Annotate copies of the solutions' trees; returns (stats, the raw requests of the same tokens)."""
    from evomath.backends import GenerationRequest
    from evomath.search.annotate import annotate_solutions, chain_from
    from evomath.tree import Tree

    copies = {}
    fresh = []
    for tree, chain in solutions:
        copy = copies.setdefault(tree.problem_id, Tree.from_dict(tree.to_dict()))
        fresh.append((copy, [copy.nodes[n.id] for n in chain]))
    first_new = {(t.problem_id, n.id): len(n.children) for t, path in fresh for n in path}
    _, stats = annotate_solutions(fresh, env, completions, progress=False)
    raw = []
    for (pid, node_id), first in first_new.items():
        tree = copies[pid]
        for child in tree.nodes[node_id].children[first:]:
            tokens = sum(n.num_tokens for n in chain_from(tree, tree.nodes[child]))
            if tokens:
                raw.append(GenerationRequest(
                    prompt=env.fmt.continuation(tree.question, tree.steps_text(tree.nodes[node_id])),
                    n=1, temperature=env.config.temperature, top_p=env.config.top_p, max_tokens=tokens,
                    seed=len(raw)))
    return stats, raw


def run_raw(backend, requests) -> tuple[int, float]:
    """One vLLM call for every sequence, each exactly as long as the completer's."""
    from vllm import SamplingParams

    params = [SamplingParams(n=1, temperature=r.temperature, top_p=r.top_p, seed=r.seed, max_tokens=r.max_tokens,
                             min_tokens=r.max_tokens, ignore_eos=True) for r in requests]
    began = time.perf_counter()
    outputs = backend.llm.generate([r.prompt for r in requests], params, use_tqdm=False)
    seconds = time.perf_counter() - began
    return sum(len(o.token_ids) for out in outputs for o in out.outputs), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/cpu_demo.yaml"))
    parser.add_argument("--model", default=None, help="the completer (default: the config's policy)")
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--test", default="demo_test:1-2")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--completions", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    from evomath import engines
    from evomath.config import load_config
    from evomath.formats import make_format
    from evomath.grading import Grader
    from evomath.models import resolve_model
    from evomath.problems import load_benchmark
    from evomath.sandbox import Sandbox
    from evomath.search import SearchEnv

    config = load_config(args.config)
    engine = engines.get_backend(str(resolve_model(args.model or config.policy)), config.engine)
    search = config.eval_search.model_copy(update={"prompt_style": "chat", "seed": 5})
    fmt = make_format(search.step_format, search.prompt_style, chat=engine.chat_prompt)
    env = SearchEnv(engine, fmt, search, Sandbox(config.sandbox), Grader(workers=1))
    with env.sandbox, env.grader:
        solutions = completer_job(env, load_benchmark(args.test, limit=args.problems, seed=0), args.samples)
        print(f"{len(solutions)} solutions of {args.problems} problems, {args.completions} continuations a step")
        totals = {"completer": [0, 0.0], "raw": [0, 0.0]}
        for repeat in range(args.repeats + 1):  # the first pair warms both paths up and is not counted
            stats, requests = run_completer(env, solutions, args.completions)
            tokens, seconds = run_raw(engine, requests)
            print(f"  run {repeat}: completer {stats.generated_tokens} tokens in {stats.seconds:.1f} s "
                  f"({stats.tokens_per_second:.1f} tok/s, {stats.generate_seconds:.1f} s inside generate), raw "
                  f"{tokens} tokens in {seconds:.1f} s ({tokens / seconds:.1f} tok/s)"
                  f"{' (warm-up)' if repeat == 0 else ''}", flush=True)
            if repeat:
                totals["completer"][0] += stats.generated_tokens
                totals["completer"][1] += stats.seconds
                totals["raw"][0] += tokens
                totals["raw"][1] += seconds
    completer = totals["completer"][0] / totals["completer"][1]
    raw = totals["raw"][0] / totals["raw"][1]
    print(f"completer {completer:.1f} tok/s, raw {raw:.1f} tok/s: ratio {completer / raw:.3f} (target >= 0.9)")
    engines.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
