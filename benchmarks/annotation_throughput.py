"""Math-Shepherd's completer against raw generation of the same tokens, side by side in one run.

    python benchmarks/annotation_throughput.py [--model smollm2-135m] [--problems 64] [--samples 4] \
        [--completions 4] [--repeats 2] [--modes one-request,step-wise]

The completer (``evomath.search.annotate``) runs through the search engine in its two modes: each
continuation in one request decoded to its end and split into steps (``one-request``, the default
for natural-language steps, Math-Shepherd's), and step by step (``step-wise``: one request per step
of every open continuation, each prompt re-read from vLLM's prefix cache, as code steps must).
Each is set against raw generation of exactly its own sequences: the same prompts (each step's
prefix), the same number of continuations per prefix, each forced to the same length as the
completer's (``min_tokens`` = ``max_tokens`` = its token count), in one vLLM call. The ratio
completer tokens/s / raw tokens/s is what the loop costs against the engine's best on this job
(target >= 0.9); labelled steps per second say what a user gets. Runs alternate (one-request, raw,
step-wise, raw, ...) so machine noise hits all alike.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = {"one-request": True, "step-wise": False}  # mode -> annotate's one_request


def completer_job(env, problems, samples: int):
    """The sampled solutions the completer starts from: (tree, path) per answered solution."""
    from evomath.search import best_of_n
    from evomath.search.annotate import solution_chains

    trees, _ = best_of_n(problems, env, samples, progress=False)
    return [(tree, chain) for tree in trees for chain in solution_chains(tree)]


def run_completer(env, solutions, completions: int, one_request: bool):
    """Annotate copies of the solutions' trees; returns (stats, labelled steps, the raw requests of the same tokens)."""
    from evomath.backends import GenerationRequest
    from evomath.search.annotate import annotate_solutions, chain_from
    from evomath.tree import Tree

    copies = {}
    fresh = []
    for tree, chain in solutions:
        copy = copies.setdefault(tree.problem_id, Tree.from_dict(tree.to_dict()))
        fresh.append((copy, [copy.nodes[n.id] for n in chain]))
    first_new = {(t.problem_id, n.id): len(n.children) for t, path in fresh for n in path}
    records, stats = annotate_solutions(fresh, env, completions, progress=False, one_request=one_request)
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
    return stats, sum(len(r["steps"]) for r in records), raw


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
    parser.add_argument("--modes", default="one-request,step-wise", help="which completer modes to run (comma-separated)")
    args = parser.parse_args(argv)
    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        parser.error(f"--modes: unknown {', '.join(sorted(unknown))} (choose from {', '.join(MODES)})")

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
        modes = {mode: one_request for mode, one_request in MODES.items() if mode in args.modes.split(",")}
        totals = {mode: {"tokens": 0, "seconds": 0.0, "raw_tokens": 0, "raw_seconds": 0.0, "labels": 0}
                  for mode in modes}
        for repeat in range(args.repeats + 1):  # the first round warms every path up and is not counted
            for mode, one_request in modes.items():
                stats, labels, requests = run_completer(env, solutions, args.completions, one_request)
                tokens, seconds = run_raw(engine, requests)
                print(f"  run {repeat} {mode}: completer {stats.generated_tokens} tokens in {stats.seconds:.1f} s "
                      f"({stats.tokens_per_second:.1f} tok/s, {stats.requests} requests, {stats.generate_seconds:.1f} s "
                      f"inside generate), raw {tokens} tokens in {seconds:.1f} s ({tokens / seconds:.1f} tok/s)"
                      f"{' (warm-up)' if repeat == 0 else ''}", flush=True)
                if repeat:
                    for name, value in (("tokens", stats.generated_tokens), ("seconds", stats.seconds),
                                        ("raw_tokens", tokens), ("raw_seconds", seconds), ("labels", labels)):
                        totals[mode][name] += value
    for mode, t in totals.items():
        completer, raw = t["tokens"] / t["seconds"], t["raw_tokens"] / t["raw_seconds"]
        print(f"{mode}: completer {completer:.1f} tok/s, raw {raw:.1f} tok/s: ratio {completer / raw:.3f} "
              f"(target >= 0.9); {t['labels'] / t['seconds']:.2f} labelled steps/s")
    engines.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
