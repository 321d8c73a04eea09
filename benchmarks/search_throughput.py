"""Generated tokens/s of MCTS against raw vLLM generation of the same batches, side by side in one run.

MCTS runs through the policy backend while every batch it sends is recorded; then exactly those
batches (same prompts, same seeded sampling parameters, so the same tokens in the same batch shape)
are replayed through ``LLM.generate`` directly. The ratio is what the search costs on top of the
engine: selection, parsing, sandbox runs, grading, backup. Target: >= 0.7.

    python benchmarks/search_throughput.py [--problems 32 --rollouts 8 --n-candidates 4 --format natural]
"""

from __future__ import annotations

import argparse
import time

from evomath.backends.vllm_backend import VLLMBackend, sampling_params
from evomath.config import EngineConfig, SearchConfig
from evomath.formats import make_format
from evomath.grading import Grader
from evomath.problems import load_benchmark
from evomath.sandbox import Sandbox
from evomath.search import SearchEnv, mcts


class RecordingBackend:
    """The policy backend, remembering every batch the search sends."""

    def __init__(self, inner: VLLMBackend):
        self.inner, self.batches = inner, []

    def generate(self, requests, progress=False):
        self.batches.append(list(requests))
        return self.inner.generate(requests, progress)

    def chat_prompt(self, *args, **kwargs):
        return self.inner.chat_prompt(*args, **kwargs)


def replay(backend: VLLMBackend, batches) -> tuple[int, float]:
    tokens, start = 0, time.perf_counter()
    for requests in batches:
        outputs = backend.llm.generate([r.prompt for r in requests], [sampling_params(r) for r in requests],
                                       use_tqdm=False)
        tokens += sum(len(o.token_ids) for out in outputs for o in out.outputs)
    return tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--rollouts", type=int, default=8)
    parser.add_argument("--n-candidates", type=int, default=4)
    parser.add_argument("--max-step-tokens", type=int, default=48)
    parser.add_argument("--max-depth", type=int, default=4)
    parser.add_argument("--format", choices=["natural", "code"], default="natural")
    args = parser.parse_args()

    if args.format == "natural":
        benchmark, style = "demo_test", "chat"
    else:
        benchmark, style = "gsm8k", "few_shot"
    config = SearchConfig(step_format=args.format, prompt_style=style, rollouts=args.rollouts,
                          n_candidates=args.n_candidates, max_step_tokens=args.max_step_tokens,
                          max_depth=args.max_depth, concurrent_problems=args.problems)
    problems = load_benchmark(benchmark, limit=args.problems, seed=0)
    backend = VLLMBackend(args.model, EngineConfig())
    recorder = RecordingBackend(backend)
    fmt = make_format(config.step_format, config.prompt_style, chat=backend.chat_prompt)
    with Sandbox() as sandbox, Grader() as grader:
        _, stats = mcts(problems, SearchEnv(recorder, fmt, config, sandbox, grader), progress=False)
    raw_tokens, raw_seconds = replay(backend, recorder.batches)
    backend.close()

    search_rate, raw_rate = stats.tokens_per_second, raw_tokens / raw_seconds
    sizes = [sum(r.n for r in batch) for batch in recorder.batches]
    print(f"{args.problems} problems x {args.rollouts} rollouts, n={args.n_candidates}, {args.format} format; "
          f"{len(sizes)} batches, mean {sum(sizes) / len(sizes):.0f} sequences (max {max(sizes)})")
    print(f"{'':18s} {'tokens':>8s} {'seconds':>8s} {'tok/s':>8s}")
    print(f"{'MCTS':18s} {stats.generated_tokens:>8d} {stats.seconds:>8.1f} {search_rate:>8.1f}")
    print(f"{'raw vLLM replay':18s} {raw_tokens:>8d} {raw_seconds:>8.1f} {raw_rate:>8.1f}")
    print(f"ratio MCTS / raw: {search_rate / raw_rate:.3f}")


if __name__ == "__main__":
    main()
