"""How close the search comes to the engine's limit on this machine, in one run on one engine.

    python benchmarks/engine_limit.py [--config configs/cpu_demo.yaml] [--batch-sizes 1,8,32,64,128,256,512]
        [--jobs demo40,demo160] [--json out.json]

1. The limit: raw ``LLM.generate`` tokens/s over batch sizes, on the in-process engine the stages use
   (the config's engine section, ``evomath.engines``' mode), with the round's own prompts (round 1's
   chat few-shot prompts of the training problems), ``--max-tokens`` tokens per sequence
   (``ignore_eos``, so every batch does the same work) and a warm prefix cache. The peak is the best
   point of that curve.
2. The search: round 1's MCTS exactly as the generate stage runs it (the config's search section at
   the bootstrap temperature) on round-sized jobs: ``demo40`` is the demo's 40 training problems,
   ``demo160`` four times as many; ``demo40x8`` the 40 problems at 8 rollouts x 8 candidates;
   ``-parallel``: as many rollouts of a tree in flight as fill the batch (virtual loss); ``-waves``:
   the engine fed in lock-step waves (``feed: waves``) instead of continuously (the default).
   Printed: its generated tokens/s over the search's wall time and as a fraction of the peak
   (target >= 0.8), where the wall time went (inside ``LLM.generate``, grading, the rest of the
   search loop), how full the engine's batches were, and vLLM's prefix-cache hit rate (tokens of
   prompts found in the cache / looked up).

vLLM's statistics are on for the whole run (``disable_log_stats=False``, to read the prefix-cache
counters), for the curve and the search alike.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    GenerateMeter,
    OtherCPU,
    enable_engine_stats,
    hit_rate,
    load,
    prefix_cache,
    wait_until_idle,
)

REPO = Path(__file__).resolve().parents[1]

JOBS = {
    "demo40": dict(problems=40),
    "demo160": dict(problems=160),
    "demo40x8": dict(problems=40, rollouts=8, n_candidates=8),
    # rollouts in flight per tree with virtual loss, as many as fill the batch (a departure from
    # rStar's one rollout at a time per tree; mcts(parallel_rollouts=None))
    "demo40-parallel": dict(problems=40, parallel_rollouts=None),
    "demo160-parallel": dict(problems=160, parallel_rollouts=None),
}
# each job also in lock-step waves (every tree waits for the whole batch), the feed before streams
JOBS |= {f"{name}-waves": job | {"feed": "waves"} for name, job in JOBS.items()}


class StreamMeter:
    """Wraps a backend's ``stream``: each poll's wall time and the sequences in flight during it
    (submitted minus finished), so a continuously fed engine's fullness is measured like a batch's."""

    def __init__(self, backend) -> None:
        self.backend, self.polls = backend, []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def stream(self):
        inner, meter = self.backend.stream(), self
        in_flight = 0

        class Metered:
            def submit(self, requests):
                nonlocal in_flight
                in_flight += sum(r.n for r in requests)
                return inner.submit(requests)

            def poll(self):
                nonlocal in_flight
                start, during = time.perf_counter(), in_flight
                done = inner.poll()
                in_flight -= sum(max(1, len(r.completions)) for _, r in done)
                meter.polls.append((time.perf_counter() - start, during))
                return done

            def close(self):
                inner.close()

        return Metered()

    def in_flight(self) -> float:
        """Sequences on the engine, time-weighted over the polls."""
        total = sum(seconds for seconds, _ in self.polls)
        return sum(seconds * n for seconds, n in self.polls) / total if total else 0.0


def round_one(config, problems: int, **search):
    """The generate stage's round-1 search config (evomath.stages.round_search_config) and problems."""
    from evomath.problems import load_benchmark

    config_search = config.search.model_copy(update={
        "temperature": config.bootstrap_temperature, "seed": config.search.seed + 1000, **search,
    })
    return config_search, load_benchmark(config.data.source, limit=problems, seed=config.data.seed)


def peak_curve(llm, prompts: list[str], sizes: list[int], max_tokens: int, repeats: int, retries: int) -> list[dict]:
    """tok/s at each batch size; a point during which other processes took more than 0.25 of a core
    is measured again once the machine is idle (up to ``retries`` times; the last try is kept)."""
    from vllm import SamplingParams

    rows = []
    for size in sizes:
        batch = [prompts[i % len(prompts)] for i in range(size)]
        params = [SamplingParams(temperature=0.9, top_p=0.95, max_tokens=max_tokens, ignore_eos=True, seed=i)
                  for i in range(size)]
        warm = [SamplingParams(temperature=0.9, max_tokens=1, seed=i) for i in range(size)]
        start = time.perf_counter()
        outs = llm.generate(batch, warm, use_tqdm=False)  # the prompts enter the prefix cache
        prefill = sum(len(o.prompt_token_ids) for o in outs) / (time.perf_counter() - start)
        for attempt in range(retries + 1):
            tokens = seconds = 0.0
            with OtherCPU() as other:
                for _ in range(repeats):
                    start = time.perf_counter()
                    outputs = llm.generate(batch, params, use_tqdm=False)
                    seconds += time.perf_counter() - start
                    tokens += sum(len(o.token_ids) for out in outputs for o in out.outputs)
            if other.cores <= 0.25 or attempt == retries:
                break
            print(f"{size:>9d} {tokens / seconds:>8.1f}   other processes took {other.cores:.2f} cores: again "
                  f"(waited {wait_until_idle():.0f} s for an idle machine)", flush=True)
        rows.append({"sequences": size, "tok_s": tokens / seconds, "cold_prefill_tok_s": prefill,
                     "other_cores": other.cores, "load": load()})
        print(f"{size:>9d} {tokens / seconds:>8.1f} {prefill:>17.0f}   other cores {other.cores:.2f}, load {load()}",
              flush=True)
    return rows


class TimedGrader:
    """The stage's grader, timing ``grade_many`` (the engine idles while it runs)."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0

    def grade_many(self, pairs):
        start = time.perf_counter()
        try:
            return self.inner.grade_many(pairs)
        finally:
            self.seconds += time.perf_counter() - start


def run_job(name: str, backend, config, parallel_rollouts: int | None = 1, **job) -> dict:
    from evomath.formats import make_format
    from evomath.grading import Grader
    from evomath.sandbox import Sandbox
    from evomath.search import SearchEnv, mcts

    search, problems = round_one(config, **job)
    fmt = make_format(search.step_format, search.prompt_style, chat=backend.chat_prompt)
    backend.llm.reset_prefix_cache()  # each job starts cold, as a stage's first search does
    meter, streams = GenerateMeter().attach(backend.llm), StreamMeter(backend)
    before_cache, before_load = prefix_cache(backend.llm), load()
    with Sandbox(config.sandbox) as sandbox, Grader(workers=1) as inner, OtherCPU() as other:
        grader = TimedGrader(inner)
        trees, stats = mcts(problems, SearchEnv(streams, fmt, search, sandbox, grader), progress=False,
                             parallel_rollouts=parallel_rollouts)
    meter.detach()
    calls = meter.calls
    totals = meter.totals()
    in_gen = stats.generate_seconds  # inside the engine: LLM.generate calls, or the stream's polls
    seqs = [c.sequences for c in calls]
    weighted = sum(c.sequences * (c.end - c.start) for c in calls) / in_gen if in_gen else 0.0
    small = sum(c.end - c.start for c in calls if c.sequences < 64)
    return {
        "job": name, "feed": search.feed, "problems": len(problems), "rollouts": search.rollouts,
        "n_candidates": search.n_candidates, "polls": len(streams.polls), "stream_in_flight": streams.in_flight(),
        "search_s": stats.seconds, "generated_tokens": stats.generated_tokens,
        "tok_s": stats.generated_tokens / stats.seconds, "prompt_tokens": stats.prompt_tokens,
        "generate_s": in_gen, "tok_s_in_generate": stats.generated_tokens / in_gen if in_gen else 0.0,
        "grading_s": grader.seconds, "other_s": stats.seconds - in_gen - grader.seconds,
        "calls": len(calls), "mean_sequences": sum(seqs) / len(seqs) if seqs else 0, "max_sequences": max(seqs or [0]),
        "time_weighted_sequences": weighted, "generate_s_below_64": small, "batch_fill": totals["batch_fill"],
        "prefix_hit_rate": hit_rate(before_cache, prefix_cache(backend.llm)),
        "solved": sum(any(n.correct for n in t.answered()) for t in trees),
        "load_before": before_load, "load_after": load(), "other_cores": other.cores,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "cpu_demo.yaml"))
    parser.add_argument("--batch-sizes", default="1,8,32,64,128,256,512")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per sequence on the curve")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--retries", type=int, default=3, help="re-measure a curve point disturbed by other processes")
    parser.add_argument("--wait-idle", type=float, default=600, help="wait up to this long for an idle machine before each job")
    parser.add_argument("--jobs", default="demo40,demo160", help=f"comma list of {', '.join(JOBS)}")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from evomath.backends import make_backend
    from evomath.config import load_config

    config = load_config(args.config)
    enable_engine_stats()
    start = time.perf_counter()
    backend = make_backend(config.policy, config.engine, in_process=True)  # the stages' engine mode
    print(f"engine up in {time.perf_counter() - start:.1f} s; load {load()}", flush=True)
    search, problems = round_one(config, 64)
    from evomath.formats import make_format

    fmt = make_format(search.step_format, search.prompt_style, chat=backend.chat_prompt)
    prompts = [fmt.continuation(p.question, []) for p in problems]
    prompt_tokens = sum(len(backend.tokenizer(p)["input_ids"]) for p in prompts) / len(prompts)
    print(f"\nraw LLM.generate, {args.max_tokens} tokens a sequence, round-1 prompts ({prompt_tokens:.0f} tokens on average)")
    print(f"{'sequences':>9s} {'tok/s':>8s} {'cold prefill tok/s':>17s}")
    curve = peak_curve(backend.llm, prompts, [int(s) for s in args.batch_sizes.split(",")], args.max_tokens, args.repeats, args.retries)
    peak = max(curve, key=lambda r: r["tok_s"])
    print(f"peak: {peak['tok_s']:.1f} tok/s at {peak['sequences']} sequences")

    jobs = []
    for name in args.jobs.split(","):
        print(f"\n(waited {wait_until_idle(args.wait_idle):.0f} s for an idle machine)", flush=True)
        job = run_job(name, backend, config, **JOBS[name])
        job["fraction_of_peak"] = job["tok_s"] / peak["tok_s"]
        jobs.append(job)
        hit = job["prefix_hit_rate"]
        print(f"\n{name}: {job['problems']} problems x {job['rollouts']} rollouts x {job['n_candidates']} candidates, "
              f"{job['search_s']:.1f} s, {job['generated_tokens']} tokens, {job['tok_s']:.1f} tok/s = "
              f"{job['fraction_of_peak']:.2f} of the peak (target >= 0.8); load {job['load_before']} -> {job['load_after']}, "
              f"other processes {job['other_cores']:.2f} cores (the grader's workers included)")
        print(f"  wall: {job['generate_s']:.1f} s in the engine ({job['generate_s'] / job['search_s']:.0%}), "
              f"{job['grading_s']:.1f} s grading, {job['other_s']:.1f} s rest of the search loop")
        if job["feed"] == "waves":
            print(f"  inside generate: {job['tok_s_in_generate']:.1f} tok/s; {job['calls']} calls, "
                  f"{job['mean_sequences']:.0f} sequences a call on average (max {job['max_sequences']}, time-weighted "
                  f"{job['time_weighted_sequences']:.0f}); {job['generate_s_below_64']:.1f} s in calls under 64 "
                  f"sequences; batch fill {job['batch_fill']:.0%} (tokens / (sequences x the call's longest sequence))")
        else:
            print(f"  inside the engine: {job['tok_s_in_generate']:.1f} tok/s; {job['polls']} polls, "
                  f"{job['stream_in_flight']:.0f} sequences in flight (time-weighted)")
        print(f"  prompt tokens {job['prompt_tokens']}, prefix-cache hit rate "
              f"{'n/a' if hit is None else f'{hit:.1%}'}; solved {job['solved']}", flush=True)
    backend.close()
    if args.json:
        args.json.write_text(json.dumps({"curve": curve, "peak": peak, "jobs": jobs}, indent=2))


if __name__ == "__main__":
    main()
