"""Sampling step by step against one request per solution (``search.whole_solutions``), side by side.

    python benchmarks/whole_solutions.py --model <policy> [--config configs/cpu_demo.yaml] \
        [--problems 200] [--samples 1] [--repeats 1]

Greedy (``--samples 1``) or best-of-N on the same held-out problems with the config's
``eval_search``, alternating the two modes on one engine: step by step (a request per step, each
prompt re-read from the prefix cache, the way MCTS grows) and whole solutions (a request decodes
the rest of the solution, split into steps afterwards; natural steps only). Prints seconds,
generated tokens, tokens/s and requests of each, the time ratio, and the accuracy of each with the
paired bootstrap interval of the difference (greedy: the answer; best-of-N: pass@N), so a user sees
the speed and that the answers did not change beyond noise. A step is a paragraph of any length in
whole solutions (step by step cuts it at ``max_step_tokens``), so the two modes need not write the
same tokens.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def solved(trees) -> list[bool]:
    """Per problem: did some sampled solution reach the gold answer."""
    return [any(tree.is_success(node) for node in tree.answered()) for tree in trees]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/cpu_demo.yaml"))
    parser.add_argument("--model", default=None, help="the policy (default: the config's)")
    parser.add_argument("--test", default="demo_test:1-2")
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--samples", type=int, default=1, help="1: greedy; more: best-of-N at the eval temperature")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)

    from evaluation.stats import paired_bootstrap
    from evomath import engines
    from evomath.config import load_config
    from evomath.formats import make_format
    from evomath.grading import Grader
    from evomath.models import resolve_model
    from evomath.problems import load_benchmark
    from evomath.search import SearchEnv, best_of_n, greedy

    config = load_config(args.config)
    engine = engines.get_backend(str(resolve_model(args.model or config.policy)), config.engine)
    search = config.eval_search
    fmt = make_format(search.step_format, search.prompt_style, chat=engine.chat_prompt)
    problems = load_benchmark(args.test, limit=args.problems, seed=0)
    totals = {mode: {"seconds": 0.0, "tokens": 0, "requests": 0} for mode in ("step by step", "whole solutions")}
    outcomes: dict[str, list[bool]] = {}
    with Grader(workers=1) as grader:
        for repeat in range(args.repeats + 1):  # the first round warms both modes up and is not counted
            for mode, whole in (("step by step", False), ("whole solutions", True)):
                env = SearchEnv(engine, fmt, search.model_copy(update={"whole_solutions": whole}), None, grader)
                batch = problems[:16] if repeat == 0 else problems
                if args.samples == 1:
                    trees, stats = greedy(batch, env, progress=False)
                else:
                    trees, stats = best_of_n(batch, env, args.samples, progress=False)
                print(f"  run {repeat} {mode}: {stats.seconds:.1f} s, {stats.generated_tokens} tokens "
                      f"({stats.tokens_per_second:.1f} tok/s), {stats.requests} requests"
                      f"{' (warm-up, 16 problems)' if repeat == 0 else ''}", flush=True)
                if repeat:
                    for name, value in (("seconds", stats.seconds), ("tokens", stats.generated_tokens),
                                        ("requests", stats.requests)):
                        totals[mode][name] += value
                    outcomes[mode] = solved(trees)  # deterministic for greedy; the last repeat for samples
    step, whole = totals["step by step"], totals["whole solutions"]
    what = "greedy" if args.samples == 1 else f"pass@{args.samples}"
    for mode, t in totals.items():
        correct = outcomes[mode]
        print(f"{mode}: {t['seconds']:.1f} s, {t['tokens']} tokens, {t['tokens'] / t['seconds']:.1f} tok/s, "
              f"{t['requests']} requests; {what} {100 * sum(correct) / len(correct):.1f}% of {len(correct)}")
    difference = paired_bootstrap(outcomes["whole solutions"], outcomes["step by step"])
    print(f"whole solutions take {whole['seconds'] / step['seconds']:.2f}x the time of step by step "
          f"({step['seconds'] / whole['seconds']:.2f}x faster); {what} whole - step {difference.points()} points")
    engines.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
