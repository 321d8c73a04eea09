"""The same ``evomath`` CLI job from two source trees, alternating: wall time from the command to its
exit (engine start-up included) and the tokens/s it prints.

    git worktree add /tmp/evomath-old <commit>   # or: git archive <commit> | tar -x -C /tmp/evomath-old
    python benchmarks/cli_engine_mode.py --before /tmp/evomath-old [--job search|evaluate|both] [--repeats 2]

Written to measure the CLI before and after it ran its engine in-process on a CPU (the "before"
tree starts vLLM's separate engine-core process). Each run waits for an idle machine and reports the
cores other processes used meanwhile.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OtherCPU, load, wait_until_idle  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

JOBS = {
    "search": ["search", "--method", "mcts", "--problems", "demo_test", "--limit", "8", "--format", "natural",
               "--prompt-style", "chat", "--rollouts", "4", "--n-candidates", "4"],
    "evaluate": ["evaluate", "--benchmark", "demo_test", "--limit", "20", "--methods", "greedy,maj@8", "--format",
                 "natural", "--prompt-style", "chat", "--no-progress"],
}


def run(tree: Path, job: str, out: Path) -> dict:
    cmd = [sys.executable, "-m", "evomath.cli", *JOBS[job], "--out", str(out)]
    env = os.environ | {"PYTHONPATH": str(tree)}
    env.setdefault("EVOMATH_DATA_DIR", str(REPO.parent / "shared" / "data"))
    waited = wait_until_idle()
    before = load()
    start = time.perf_counter()
    with OtherCPU() as other:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    tok_s = re.search(r"\(([\d.]+) tok/s", done.stdout)
    table = [line for line in done.stdout.splitlines() if re.match(r"\S+\s+(greedy|maj@\d+)\s", line)]
    return {"wall_s": wall, "tok_s": float(tok_s[1]) if tok_s else None, "table": table, "waited_s": waited,
            "other_cores": other.cores, "load": f"{before} -> {load()}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the older source tree")
    parser.add_argument("--after", type=Path, default=REPO, help="the newer source tree (default: this one)")
    parser.add_argument("--job", choices=("search", "evaluate", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="cli-mode-") as tmp:
        for rep in range(args.repeats):
            for job in JOBS if args.job == "both" else (args.job,):
                for side, tree in (("before", args.before), ("after", args.after)):
                    r = run(tree.resolve(), job, Path(tmp) / f"{job}-{side}-{rep}")
                    results.setdefault((job, side), []).append(r)
                    extra = f"{r['tok_s']:.1f} tok/s" if r["tok_s"] else " | ".join(r["table"])
                    print(f"{job:8s} {side:6s} #{rep + 1}: {r['wall_s']:6.1f} s wall, {extra}; "
                          f"other processes {r['other_cores']:.2f} cores, load {r['load']}", flush=True)
    print()
    for job in dict.fromkeys(j for j, _ in results):
        mean = {side: sum(r["wall_s"] for r in results[job, side]) / len(results[job, side]) for side in ("before", "after")}
        print(f"{job}: before {mean['before']:.1f} s, after {mean['after']:.1f} s wall on average: "
              f"{mean['before'] / mean['after']:.2f}x faster")


if __name__ == "__main__":
    main()
