"""vLLM on the CPU: in-process engine vs vLLM's default engine-core + worker processes.

Each mode runs in its own child process (the setting is read once per process), modes alternate,
and every run generates the same seeded requests. Prints start-up seconds, tokens/s and the ratio.

    python benchmarks/engine_processes.py [--sequences 64] [--max-tokens 128] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

MODES = {"in-process": "0", "processes": "1"}


def measure(sequences: int, max_tokens: int) -> dict:
    """One engine in this process: start-up time and tokens/s on `sequences` seeded requests."""
    from evomath.backends import GenerationRequest
    from evomath.backends.vllm_backend import VLLMBackend

    start = time.perf_counter()
    backend = VLLMBackend("smollm2-135m")
    startup = time.perf_counter() - start
    requests = [
        GenerationRequest(prompt=backend.chat_prompt(f"Tom has {i + 2} pens and gets 5 more. How many pens does Tom have now?"),
                          n=1, temperature=0.8, top_p=0.95, max_tokens=max_tokens, seed=i)
        for i in range(sequences)
    ]
    backend.generate(requests[:4])  # warm-up
    start = time.perf_counter()
    results = backend.generate(requests)
    seconds = time.perf_counter() - start
    tokens = sum(c.num_tokens for r in results for c in r.completions)
    backend.close()
    return {"startup_s": startup, "tok_s": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.sequences, args.max_tokens)))
        return

    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for _ in range(args.repeats):
        for mode, flag in MODES.items():
            env = os.environ | {"VLLM_ENABLE_V1_MULTIPROCESSING": flag}
            out = subprocess.run([sys.executable, __file__, "--child", f"--sequences={args.sequences}",
                                  f"--max-tokens={args.max_tokens}"], env=env, capture_output=True, text=True, check=True)
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    mean = {mode: {k: sum(r[k] for r in rs) / len(rs) for k in rs[0]} for mode, rs in runs.items()}
    print(f"{'mode':>11} {'start-up s':>10} {'tok/s':>7}")
    for mode, m in mean.items():
        print(f"{mode:>11} {m['startup_s']:>10.1f} {m['tok_s']:>7.1f}")
    ratio = mean["in-process"]["tok_s"] / mean["processes"]["tok_s"]
    print(f"in-process / processes: {ratio:.2f}x tokens/s, "
          f"{mean['processes']['startup_s'] / mean['in-process']['startup_s']:.2f}x faster start-up")


if __name__ == "__main__":
    main()
