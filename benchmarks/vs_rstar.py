"""rStar-Math's release against evomath: same problems, model and search settings, one after the other.

    python benchmarks/vs_rstar.py --rstar ../shared/peers/rstar-math --mario-eval ../shared/peers/MARIO_EVAL \
        [--setting a|b|both] [--deps runs/rstar-deps] [--json out.json]

rStar runs from the path given, unmodified except for the API drift between its pinned vLLM 0.6.6
and the vLLM here, applied to a temporary copy (``DRIFT`` below; nothing algorithmic). Its extra
PyPI dependencies and MARIO_EVAL (its grader) are installed with ``pip --target`` into ``--deps``
the first time, and put first on ``PYTHONPATH`` for rStar's process only. Each side runs in its own
process with an in-process vLLM engine and the same engine settings (the stages': bf16, eager,
explicit KV cache, chunked prefill off, the same batch limits); rStar keeps its prefix cache off
as vLLM 0.6.6 had it, evomath keeps its own on. ``torch.set_num_threads(12)`` in rStar's
``main.py`` is capped at the number of cores (12 threads on 2 cores is 2.6x slower).

Settings (``--setting``):
  a  the code format on 8 GSM8K test problems, 4 rollouts x 4 candidates, depth 4, 64 tokens a step, T 0.7
  b  rStar's data-generation shape (sample_mcts.yaml: 2-shot code prompt, n = 12, 16 rollouts) scaled
     down: 8 rollouts x 8 candidates, depth 4, 64 tokens a step, on 8 problems (rStar took 869 s on
     2 idle cores, 2026-12-02; 248 s on 4 problems: lock-step waves that re-read every prompt);
     ``--problems 4`` for a quicker run (two of its four trees end after one rollout, so rStar's
     later rollouts there are nearly free), ``--only evomath --problems 16`` shows evomath with more.
Any of --problems/--rollouts/--candidates/--depth/--step-tokens/--temperature overrides the preset.

Printed per side: rollouts, search seconds (engine start-up excluded), rollouts/s, generated and
prompt tokens, tokens/s, seconds inside ``LLM.generate``; then evomath/rStar ratios and the load
average before and after each side and the cores other processes used meanwhile (each side waits for
an idle machine first; on a shared machine, only side-by-side ratios compare).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import GenerateMeter, OtherCPU, load, wait_until_idle  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

SETTINGS = {
    "a": dict(problems=8, rollouts=4, candidates=4, depth=4, step_tokens=64, temperature=0.7),
    "b": dict(problems=8, rollouts=8, candidates=8, depth=4, step_tokens=64, temperature=0.7),
}

# rStar's PyPI dependencies beyond this venv (its requirements.txt minus vllm/torch/transformers/trl,
# which it takes from here), installed without their own dependencies so nothing in the venv is shadowed.
RSTAR_PYPI = [
    "omegaconf==2.4.0.dev2", "antlr4-python3-runtime==4.11.1", "pebble", "timeout-decorator", "termcolor",
    "jsonlines", "word2number", "func_timeout", "editdistance",
]

# The API-drift changes (../shared/peers/README.md): file -> [(old, new)], each old text exactly once.
DRIFT = {
    "rstar_deepthink/llms/llm_engine.py": [
        # vLLM 0.32's LLM no longer takes swap_space.
        ("        swap_space=config.swap_space,\n", ""),
        # vLLM 0.6.6 had the prefix cache off by default; keep it off. On CPU, the engine settings
        # evomath uses (not rStar's algorithm) come in through the environment.
        ("        enforce_eager=True,\n        distributed_executor_backend",
         "        enforce_eager=True,\n        enable_prefix_caching=False,\n"
         "        **__import__('json').loads(__import__('os').environ.get('VS_RSTAR_ENGINE', '{}')),\n"
         "        distributed_executor_backend"),
        # best_of was removed; rStar's configs set best_of == n, where it did nothing.
        ("        best_of=config.best_of,\n", ""),
        # stop must be a plain list, not OmegaConf's ListConfig.
        ("        stop=config.stop,\n", "        stop=list(config.stop) if config.stop is not None else None,\n"),
    ],
    "main.py": [
        ("torch.set_num_threads(12)", "torch.set_num_threads(min(12, os.cpu_count() or 1))"),
    ],
}

# Runs inside rStar's process, beside its main.py: meters LLM.generate and Solver.solve, then runs
# main.py as the release's own entry point.
RUNNER = textwrap.dedent('''
    import json, os, runpy, sys, time
    import vllm
    from rstar_deepthink.solver import Solver

    stats = {"generate_s": 0.0, "generate_calls": 0, "requests": 0, "sequences": 0, "prompt_tokens": 0,
             "generated_tokens": 0, "solve_s": 0.0, "problems": 0, "startup_s": 0.0}
    inner_generate = vllm.LLM.generate

    def generate(self, *args, **kwargs):
        start = time.perf_counter()
        outputs = inner_generate(self, *args, **kwargs)
        stats["generate_s"] += time.perf_counter() - start
        stats["generate_calls"] += 1
        stats["requests"] += len(outputs)
        stats["sequences"] += sum(len(o.outputs) for o in outputs)
        stats["prompt_tokens"] += sum(len(o.prompt_token_ids or []) for o in outputs)
        stats["generated_tokens"] += sum(len(c.token_ids) for o in outputs for c in o.outputs)
        return outputs

    vllm.LLM.generate = generate
    inner_init, inner_solve = Solver.__init__, Solver.solve

    def init(self, *args, **kwargs):
        start = time.perf_counter()
        inner_init(self, *args, **kwargs)
        stats["startup_s"] += time.perf_counter() - start

    def solve(self, agents, *args, **kwargs):
        start = time.perf_counter()
        out = inner_solve(self, agents, *args, **kwargs)
        stats["solve_s"] += time.perf_counter() - start
        stats["problems"] += len(agents)
        stats["iterations"] = int(self.config.iterations)
        return out

    Solver.__init__, Solver.solve = init, solve
    stats_path = os.environ["VS_RSTAR_STATS"]
    sys.argv = ["main.py", *sys.argv[1:]]
    try:
        runpy.run_path("main.py", run_name="__main__")
    finally:
        with open(stats_path, "w") as fh:
            json.dump(stats, fh)
''')


# --- rStar's side ------------------------------------------------------------------------------


def _writable_copy(src: Path, dst: Path, ignore=None) -> Path:
    """Copy a (possibly read-only) tree and make the copy writable."""
    shutil.copytree(src, dst, ignore=ignore, copy_function=shutil.copyfile)
    for root, dirs, files in os.walk(dst):
        for name in dirs + files:
            os.chmod(os.path.join(root, name), 0o755 if name in dirs else 0o644)
    os.chmod(dst, 0o755)
    return dst


def ensure_deps(deps: Path, mario: Path) -> None:
    """rStar's extra dependencies and MARIO_EVAL in ``deps`` (``pip --target``), once."""
    marker = deps / ".vs-rstar-installed"
    if marker.exists():
        return
    print(f"== installing rStar's dependencies into {deps} (once)", flush=True)
    with tempfile.TemporaryDirectory(prefix="mario-eval-") as tmp:
        # pip builds local projects in place: build from a copy, never in the user's checkout.
        src = _writable_copy(mario, Path(tmp) / "MARIO_EVAL", ignore=shutil.ignore_patterns(".git"))
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(deps),
               *RSTAR_PYPI, str(src), str(src / "latex2sympy")]
        subprocess.run(cmd, check=True)
    marker.write_text(json.dumps({"packages": RSTAR_PYPI + ["MARIO_EVAL", "latex2sympy2"]}))


def patched_copy(rstar: Path, dst: Path) -> Path:
    root = _writable_copy(rstar, dst, ignore=shutil.ignore_patterns(".git", "images", "eval_data", "train"))
    for rel, edits in DRIFT.items():
        path = root / rel
        text = path.read_text()
        for old, new in edits:
            if text.count(old) != 1:
                raise SystemExit(f"{rstar}/{rel}: expected one {old!r} (not rStar-Math b3c1846?)")
            text = text.replace(old, new)
        path.write_text(text)
    (root / "_vs_rstar_runner.py").write_text(RUNNER)
    return root


def rstar_config(root: Path, s: dict) -> Path:
    """rStar's data-generation config (sample_mcts.yaml) with this run's sizes; its max_depth check
    is ``depth > max_depth``, so max_depth = D - 1 allows D steps, as evomath's ``depth >= D`` does."""
    import yaml

    config = yaml.safe_load((root / "config" / "sample_mcts.yaml").read_text())
    config.update(
        iterations=s["rollouts"], n_generate_sample=s["candidates"], best_of=s["candidates"],
        max_depth=s["depth"] - 1, max_tokens=s["step_tokens"], temperature=s["temperature"],
        batch_size=s["problems"], max_model_len=s["max_model_len"], tp=1,
    )
    path = root / "config" / "vs_evomath.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_rstar(args, s: dict, problems: list, model_dir: str, work: Path) -> dict:
    from evomath.backends.vllm_backend import engine_kwargs
    from evomath.config import EngineConfig

    root = patched_copy(args.rstar, work / "rstar")
    qaf = work / "problems.jsonl"
    qaf.write_text("".join(json.dumps({"question": p.question, "answer": p.answer}) + "\n" for p in problems))
    cfg = rstar_config(root, s)
    engine = engine_kwargs(model_dir, EngineConfig(max_model_len=s["max_model_len"]))
    shared = ("kv_cache_memory_bytes", "enable_chunked_prefill", "max_num_batched_tokens", "max_num_seqs")
    stats_path = work / "rstar_stats.json"
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([str(args.deps), str(root)]),
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_LOGGING_LEVEL": "WARNING",
        "VS_RSTAR_ENGINE": json.dumps({k: engine[k] for k in shared if k in engine}),
        "VS_RSTAR_STATS": str(stats_path),
    }
    log_path = work / "rstar.log"
    cmd = [sys.executable, "_vs_rstar_runner.py", "--custom_cfg", str(cfg), "--qaf", str(qaf),
           "--model_dir", model_dir, "--save_in_model", str(work / "rstar_out" / "trees")]
    with log_path.open("w") as log:
        done = subprocess.run(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0 or not stats_path.exists():
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"rStar failed (exit {done.returncode}); log {log_path}:\n{tail}")
    stats = json.loads(stats_path.read_text())
    stats |= {"rollouts": stats["problems"] * stats.get("iterations", s["rollouts"]), "seconds": stats["solve_s"],
              "expansions": stats["requests"]}
    return stats | _rstar_trees(work / "rstar_out" / "trees.jsonl")


def _rstar_trees(path: Path) -> dict:
    """What rStar's trees hold: steps (nodes below the roots), answers (steps with a final answer:
    not a dead end, too many steps or too many code errors) and solved problems (with
    ``is_sampling`` a correct answer backs up +1 and is visited once, so its Q is exactly 1)."""
    if not path.exists():
        return {"solved": None, "answers": None, "steps": None}
    special = ("Too many consecutive", "Fail to sove", "Fail to generate")
    solved = answers = steps = 0
    for line in path.read_text().splitlines():
        states = [v for v in json.loads(line)["rstar"].values() if isinstance(v, dict)]
        answered = [v for v in states if v.get("final_answer") and not str(v["final_answer"]).startswith(special)]
        steps += len(states) - 1
        answers += len(answered)
        solved += any(v.get("q_value") == 1.0 for v in answered)
    return {"solved": solved, "answers": answers, "steps": steps}


# --- evomath's side ----------------------------------------------------------------------------


def run_evomath_child(spec: dict) -> dict:
    """evomath's MCTS, as ``evomath search --method mcts`` runs it; its own stats say how long it was
    inside the engine (``calls``: engine polls when fed continuously, generate calls in waves)."""
    from evomath.backends import make_backend
    from evomath.config import EngineConfig, SandboxConfig, SearchConfig
    from evomath.formats import make_format
    from evomath.grading import Grader
    from evomath.problems import load_benchmark
    from evomath.sandbox import Sandbox
    from evomath.search import SearchEnv, run_search

    s = spec["setting"]
    problems = load_benchmark("gsm8k", limit=s["problems"], seed=0)
    search = SearchConfig(step_format="code", prompt_style="few_shot", rollouts=s["rollouts"],
                          n_candidates=s["candidates"], max_depth=s["depth"], max_step_tokens=s["step_tokens"],
                          temperature=s["temperature"], top_p=1.0)  # rStar's top_p
    start = time.perf_counter()
    backend = make_backend(spec["model"], EngineConfig(max_model_len=s["max_model_len"]), in_process=True)
    startup = time.perf_counter() - start
    meter = GenerateMeter().attach(backend.llm)
    try:
        fmt = make_format(search.step_format, search.prompt_style, chat=backend.chat_prompt)
        with Sandbox(SandboxConfig()) as sandbox, Grader() as grader:
            trees, stats = run_search("mcts", problems, SearchEnv(backend, fmt, search, sandbox, grader), progress=False)
    finally:
        backend.close()
    solved = sum(any(n.correct for n in t.answered()) for t in trees)
    answers = sum(len(t.answered()) for t in trees)
    steps = sum(len(t.nodes) - 1 for t in trees)
    # the engine is fed continuously (LLM.generate is not called): tokens and time from the search's stats
    return meter.totals() | {"rollouts": stats.rollouts, "seconds": stats.seconds, "startup_s": startup,
                             "problems": len(trees), "solved": solved, "answers": answers, "steps": steps,
                             "expansions": stats.requests, "generated_tokens": stats.generated_tokens,
                             "prompt_tokens": stats.prompt_tokens, "generate_s": stats.generate_seconds,
                             "generate_calls": stats.batches, "feed": search.feed}


def run_evomath(s: dict, model_dir: str, work: Path) -> dict:
    spec_path, out_path = work / "evomath_spec.json", work / "evomath_stats.json"
    spec_path.write_text(json.dumps({"setting": s, "model": model_dir}))
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, __file__, "--child", str(spec_path), "--child-out", str(out_path)]
    with (work / "evomath.log").open("w") as log:
        done = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"evomath failed (exit {done.returncode}); log {work / 'evomath.log'}")
    return json.loads(out_path.read_text())


# --- report ------------------------------------------------------------------------------------


def report(name: str, s: dict, sides: dict[str, dict]) -> None:
    print(f"\nsetting {name}: {s['problems']} GSM8K test problems, code format, {s['rollouts']} rollouts x "
          f"{s['candidates']} candidates, depth {s['depth']}, {s['step_tokens']} tokens a step, T {s['temperature']}")
    head = f"{'':8s} {'rollouts':>8s} {'search s':>9s} {'rollouts/s':>10s} {'gen tok':>8s} {'tok/s':>7s} " \
           f"{'prompt tok':>10s} {'in generate s':>14s} {'calls':>6s} {'start-up s':>10s} {'solved':>6s}  load before -> after, other processes"
    print(head)
    for side, r in sides.items():
        share = r["generate_s"] / r["seconds"] if r["seconds"] else 0
        print(f"{side:8s} {r['rollouts']:>8d} {r['seconds']:>9.1f} {r['rollouts'] / r['seconds']:>10.3f} "
              f"{r['generated_tokens']:>8d} {r['generated_tokens'] / r['seconds']:>7.1f} {r['prompt_tokens']:>10d} "
              f"{r['generate_s']:>8.1f} ({share:4.0%}) {r['generate_calls']:>6d} {r['startup_s']:>10.1f} "
              f"{r['solved'] if r['solved'] is not None else '-':>6}  {r['load_before']} -> {r['load_after']}, "
              f"others {r['other_cores']:.2f} cores")
    print("what a rollout did (expansions: requests of n candidates; steps: tree nodes; answers: steps with a "
          "final answer, graded)")
    for side, r in sides.items():
        n = r["rollouts"]
        print(f"{side:8s} {r['expansions']:>5d} expansions ({r['expansions'] / n:.2f} a rollout), "
              f"{r['generated_tokens'] / n:.0f} tokens a rollout, {r['steps']} steps, {r['answers']} answers "
              f"({r['answers'] / r['seconds']:.2f}/s)")
    rs, ev = sides["rStar"], sides["evomath"]
    def ratio(key: str) -> str:
        theirs = rs[key] / rs["seconds"] if rs[key] else 0.0
        return f"{ev[key] / ev['seconds'] / theirs:.2f}x" if theirs else "n/a (rStar: none)"

    print(f"evomath / rStar: {ratio('rollouts')} rollouts/s, {ratio('generated_tokens')} tokens/s, "
          f"{ratio('expansions')} expansions/s, {ratio('answers')} answers/s, "
          f"{(ev['prompt_tokens'] / ev['rollouts']) / (rs['prompt_tokens'] / rs['rollouts']):.2f}x prompt tokens "
          f"per rollout; target >= 5x rollouts/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rstar", type=Path, default=REPO.parent / "shared" / "peers" / "rstar-math",
                        help="a checkout of microsoft/rStar, branch rStar-math (default: ../shared/peers/rstar-math)")
    parser.add_argument("--mario-eval", type=Path, default=None,
                        help="a checkout of MARIO_EVAL (default: MARIO_EVAL beside --rstar)")
    parser.add_argument("--deps", type=Path, default=REPO / "runs" / "rstar-deps",
                        help="pip --target directory for rStar's extra dependencies (installed if missing)")
    parser.add_argument("--setting", choices=("a", "b", "both"), default="both")
    for name in ("problems", "rollouts", "candidates", "depth", "step_tokens"):
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--max-model-len", type=int, default=2048, help="both engines (evomath's default)")
    parser.add_argument("--wait-idle", type=float, default=600,
                        help="before each side, wait up to this many seconds for an idle machine")
    parser.add_argument("--only", choices=("rStar", "evomath"), default=None, help="run one side (no ratios)")
    parser.add_argument("--keep", type=Path, default=None, help="keep rStar's copy, logs and trees here")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.child_out.write_text(json.dumps(run_evomath_child(json.loads(args.child.read_text()))))
        return

    from evomath.models import pull
    from evomath.problems import load_benchmark

    args.rstar = args.rstar.resolve()
    args.mario_eval = (args.mario_eval or args.rstar.parent / "MARIO_EVAL").resolve()
    args.deps = args.deps.resolve()
    if args.keep is not None:
        args.keep = args.keep.resolve()
        args.keep.mkdir(parents=True, exist_ok=True)
    if args.only != "evomath":
        ensure_deps(args.deps, args.mario_eval)
    model_dir = str(pull("smollm2-135m", verify=False))
    results = {}
    for name in ("a", "b") if args.setting == "both" else (args.setting,):
        s = SETTINGS[name] | {k: getattr(args, k) for k in SETTINGS[name] if getattr(args, k) is not None}
        s["max_model_len"] = args.max_model_len
        problems = load_benchmark("gsm8k", limit=s["problems"], seed=0)
        work = Path(tempfile.mkdtemp(prefix=f"vs-rstar-{name}-", dir=args.keep))
        sides = {}
        for side in ("rStar", "evomath"):
            if args.only and side != args.only:
                continue
            waited = wait_until_idle(args.wait_idle)
            before = load()
            print(f"== setting {name}: {side} (load {before}, waited {waited:.0f} s for an idle machine)", flush=True)
            with OtherCPU() as other:
                r = run_rstar(args, s, problems, model_dir, work) if side == "rStar" else run_evomath(s, model_dir, work)
            sides[side] = r | {"load_before": before, "load_after": load(), "other_cores": other.cores}
        if len(sides) == 2:
            report(name, s, sides)
        else:
            print(json.dumps(sides, indent=1))
        results[name] = {"setting": s, **sides}
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"(files of setting {name} kept in {work})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
