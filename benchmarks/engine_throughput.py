"""Tokens/s through the policy backend vs calling vLLM directly, side by side in one run.

Both paths use the same engine and the same seeded requests, so they generate the same tokens; runs
alternate (raw, wrapper, raw, wrapper, ...) so machine noise hits both alike. Target: ratio >= 0.95.

    python benchmarks/engine_throughput.py [--model smollm2-135m] [--max-tokens 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

from evomath.backends import GenerationRequest
from evomath.backends.vllm_backend import VLLMBackend, sampling_params
from evomath.config import EngineConfig

QUESTIONS = [
    "Tom has {a} pens and gets {b} more. How many pens does Tom have now?",
    "A shop sells {a} apples in the morning and {b} in the afternoon. How many apples did it sell?",
    "Mia reads {a} pages a day for {b} days. How many pages does she read?",
    "There are {a} birds on a tree and {b} fly away. How many birds are left?",
]


def make_requests(backend: VLLMBackend, count: int, max_tokens: int) -> list[GenerationRequest]:
    requests = []
    for i in range(count):
        question = QUESTIONS[i % len(QUESTIONS)].format(a=10 + i, b=3 + i % 7)
        requests.append(GenerationRequest(
            prompt=backend.chat_prompt(question), n=1, temperature=0.8, top_p=0.95,
            max_tokens=max_tokens, seed=i,
        ))
    return requests


def time_raw(backend: VLLMBackend, requests) -> tuple[int, float]:
    start = time.perf_counter()
    outputs = backend.llm.generate([r.prompt for r in requests], [sampling_params(r) for r in requests], use_tqdm=False)
    seconds = time.perf_counter() - start
    return sum(len(o.token_ids) for out in outputs for o in out.outputs), seconds


def time_wrapper(backend: VLLMBackend, requests) -> tuple[int, float]:
    start = time.perf_counter()
    results = backend.generate(requests)
    seconds = time.perf_counter() - start
    return sum(c.num_tokens for r in results for c in r.completions), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1,16,64")
    args = parser.parse_args()

    backend = VLLMBackend(args.model, EngineConfig())
    print(f"{'sequences':>9} {'raw tok/s':>10} {'wrapper tok/s':>14} {'ratio':>6}")
    for size in [int(s) for s in args.batch_sizes.split(",")]:
        requests = make_requests(backend, size, args.max_tokens)
        time_raw(backend, requests)  # warm-up: compile paths, fill the prefix cache for both
        raw_tokens = raw_seconds = wrap_tokens = wrap_seconds = 0.0
        for _ in range(args.repeats):
            tokens, seconds = time_raw(backend, requests)
            raw_tokens, raw_seconds = raw_tokens + tokens, raw_seconds + seconds
            tokens, seconds = time_wrapper(backend, requests)
            wrap_tokens, wrap_seconds = wrap_tokens + tokens, wrap_seconds + seconds
        raw_rate, wrap_rate = raw_tokens / raw_seconds, wrap_tokens / wrap_seconds
        print(f"{size:>9} {raw_rate:>10.1f} {wrap_rate:>14.1f} {wrap_rate / raw_rate:>6.3f}", flush=True)
    backend.close()


if __name__ == "__main__":
    main()
