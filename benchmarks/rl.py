"""No RL vs outcome-only RL vs process-reward RL, from the same SFT policy at the same generation cost.

    python benchmarks/rl.py --work runs/rl-bench [--config configs/cpu_demo.yaml] \
        [--policy DIR --reward-model DIR] [--train-trees TREES] [--token-budget 20000] [--max-steps 30] \
        [--test-problems 400]

Phases, each cached under --work (a rerun resumes; delete a phase's output to redo it):

1. **Start** (unless --policy and --reward-model are given): one round of the config's evolution up
   to its reward model (MCTS, SFT data, SFT, the round's reward model trained in round 1), so both
   arms start from the same SFT policy and score steps with the same reward model.
2. **Outcome RL** and 3. **Process RL**: ``training.rl.train_rl`` with the config's ``rl:`` section,
   ``rewards`` outcome or process, on --train-problems of --train (the same problems, seed and
   sampling settings), each until --token-budget completion tokens are generated (or --max-steps,
   which the learning-rate decay spans). A run the reward-hacking guard stops saves no policy: its
   arm is evaluated with the SFT policy, as a round would keep it, and the report says so.
4. **Evaluation**: greedy on --test-problems held-out problems of --test for the SFT policy (no RL)
   and both RL policies: accuracy with Wilson's interval, and paired bootstrap intervals of process -
   outcome, process - none and outcome - none over the same problems (``evaluation.stats``).

Writes ``report.json`` and prints the table.

Cost, measured (2026-12-02, idle 2 cores, the demo config's ``rl:``: 2 problems x 8 completions a
step, 160 tokens at most, --token-budget 16000 --max-steps 16): an RL step takes 55-115 s (about
half generating through transformers, a quarter the backward pass, the rest the reference
log-probabilities and the reward model), an arm 15-16 steps in 22-23 minutes, and the three greedy
evaluations on 400 problems with loading 13 minutes: 58 minutes in all.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARMS = ("none", "outcome", "process")
START_STAGES = ("generate", "extra_rollouts", "bucket", "select_sft", "reward_data", "train_policy", "train_reward")


def phase(path: Path, what: str) -> bool:
    """Print what a phase does; True if its output exists already (cached)."""
    done = path.exists()
    print(f"== {what}: {'cached in' if done else 'writing'} {path}", flush=True)
    return done


def start_models(args, config) -> tuple[str, str]:
    """(SFT policy, reward model): the given ones, else round 1 of the config up to its reward model."""
    if args.policy and args.reward_model:
        return args.policy, args.reward_model
    from evolution import stages

    start = config.model_copy(update={"name": "start", "run_dir": args.work, "ppm_train_from_round": 1})
    ctx = stages.round_context(start, 1)
    print(f"== start: round 1 of {args.config} up to its {start.reward_model} under {ctx.dir}", flush=True)
    for stage in START_STAGES:
        began = time.perf_counter()
        stages.run_stage(ctx, stage)
        print(f"   {stage}: {time.perf_counter() - began:.0f} s", flush=True)
    policy, reward = stages.round_models(ctx, rl=False)
    if reward is None:
        raise SystemExit(f"round 1 under {ctx.dir} trained no {start.reward_model} (no pairs or labels): give "
                         "--policy and --reward-model")
    return policy, reward


def rl_arm(args, config, rewards: str, policy: str, reward_model: str) -> dict:
    """One RL run (cached by its metrics file); its metrics and the policy its arm is evaluated with."""
    from evomath.config import RLConfig
    from evomath.formats import make_format
    from evomath.scoring import reward_marker
    from training.rl import train_rl
    from training.sft_data import chat_fn

    out = args.work / rewards
    record = out / "metrics.json"
    if not phase(record, f"{rewards} RL, {args.token_budget} tokens at most {args.max_steps} steps"):
        rl = RLConfig.model_validate(config.rl.model_dump() | {
            "rewards": rewards, "token_budget": args.token_budget, "reward_kind": reward_marker(reward_model)["kind"]})
        search = config.search
        chat = chat_fn(policy) if search.prompt_style.startswith("chat") else None
        fmt = make_format(search.step_format, search.prompt_style, chat)
        problems = rl_problems(args, rl)
        began = time.perf_counter()
        metrics = train_rl(problems, policy, reward_model, out / "policy", rl, fmt, progress=False, overwrite=True,
                           max_steps=args.max_steps, curves=out / "curves.jsonl")
        metrics["minutes"] = (time.perf_counter() - began) / 60
        out.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(metrics, indent=2))
    metrics = json.loads(record.read_text())
    if metrics["stopped"]:
        print(f"   {rewards}: {metrics['stopped']}; evaluated with the SFT policy", flush=True)
    return metrics | {"policy": str(out / "policy") if metrics["saved"] else policy}


def rl_problems(args, rl) -> list:
    """--train-problems of --train (a seeded subset); with --train-trees and ``rl.buckets``, drawn from
    the problems whose tree (the start policy's search) is in those buckets."""
    from evomath.problems import load_benchmark
    from evomath.tree import read_trees
    from training.buckets import bucket_of, in_buckets

    if args.train_trees is None or not rl.buckets:
        return load_benchmark(args.train, limit=args.train_problems, seed=0)
    by_id = {tree.problem_id: bucket_of(tree) for tree in read_trees(args.train_trees)}
    problems = in_buckets(load_benchmark(args.train), by_id, rl.buckets)
    if not problems:
        raise SystemExit(f"{args.train_trees}: no tree of a {args.train} problem is in rl.buckets {rl.buckets}")
    random.Random(0).shuffle(problems)
    print(f"   {len(problems)} of {len(by_id)} problems with trees are in {rl.buckets}; "
          f"training on {min(len(problems), args.train_problems)}", flush=True)
    return problems[: args.train_problems]


def greedy_correct(args, config, arm: str, policy: str) -> dict[str, bool]:
    """Problem id -> greedy correct on the held-out problems (cached in the arm's records)."""
    from evaluation.benchmarks import label
    from evaluation.records import read_verdicts, records_path
    from evaluation.run import evaluate_models
    from evomath import engines

    out = args.work / "eval" / arm
    records = records_path(out, label(args.test), "greedy")
    if not phase(records, f"greedy on {args.test_problems} of {args.test} with the {arm} policy"):
        planned = config.model_copy(update={"eval": config.eval.model_copy(update={
            "benchmarks": [args.test], "methods": ["greedy"], "limit": args.test_problems})})
        evaluate_models(planned, policy, None, out)
        engines.release()
    return read_verdicts(out, label(args.test), "greedy")


def report(correct: dict[str, dict[str, bool]], runs: dict[str, dict]) -> dict:
    from evaluation.stats import accuracy_interval, paired_bootstrap

    ids = sorted(correct["none"])
    outcomes = {arm: [correct[arm][i] for i in ids] for arm in ARMS}
    result = {"problems": len(ids), "arms": {}, "differences": {}}
    print(f"\ngreedy accuracy on {len(ids)} held-out problems")
    print("| arm | accuracy [95% Wilson] | generated tokens | RL steps | RL minutes | stopped |")
    print("|---|---|---|---|---|---|")
    for arm in ARMS:
        interval = accuracy_interval(outcomes[arm])
        run = runs.get(arm, {})
        result["arms"][arm] = {"accuracy": interval.estimate, "low": interval.low, "high": interval.high} | {
            k: run[k] for k in ("generated_tokens", "rl_steps", "minutes", "stopped", "policy") if k in run}
        print(f"| {arm} | {interval.percent()} | {run.get('generated_tokens', '-')} | {run.get('rl_steps', '-')} | "
              f"{run.get('minutes', 0):.1f} | {run.get('stopped') or '-'} |")
    print("\n| difference | points [95% paired bootstrap] |\n|---|---|")
    for a, b in (("process", "outcome"), ("process", "none"), ("outcome", "none")):
        diff = paired_bootstrap(outcomes[a], outcomes[b])
        result["differences"][f"{a}-{b}"] = {"estimate": diff.estimate, "low": diff.low, "high": diff.high}
        print(f"| {a} - {b} | {diff.points()} |")
    return result


def main(argv: list[str] | None = None) -> int:
    from evomath.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="where every phase writes (and is cached)")
    parser.add_argument("--config", type=Path, default=Path("configs/cpu_demo.yaml"),
                        help="the experiment: its rl:, search:, eval_search: and engine sections")
    parser.add_argument("--policy", help="the SFT policy both arms start from (with --reward-model; else phase 1)")
    parser.add_argument("--reward-model", help="the reward model whose step scores are the process rewards")
    parser.add_argument("--train", default="demo_train:1-2", help="RL problems")
    parser.add_argument("--train-problems", type=int, default=40, help="how many of them (seeded subset)")
    parser.add_argument("--train-trees", type=Path, help="search trees of --train problems by the start policy "
                        "(trees.jsonl): with the config's rl.buckets, RL trains on the problems in those buckets")
    parser.add_argument("--token-budget", type=int, default=20_000, help="completion tokens each RL arm generates")
    parser.add_argument("--max-steps", type=int, default=30, help="optimizer steps at most (the lr decays over them)")
    parser.add_argument("--test", default="demo_test:1-2", help="held-out problems")
    parser.add_argument("--test-problems", type=int, default=400, help="how many of them (seeded subset)")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    args.work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    policy, reward_model = start_models(args, config)
    runs = {rewards: rl_arm(args, config, rewards, policy, reward_model) for rewards in ("outcome", "process")}
    policies = {"none": policy} | {arm: runs[arm]["policy"] for arm in runs}
    correct = {arm: greedy_correct(args, config, arm, policies[arm]) for arm in ARMS}
    result = report(correct, runs) | {"policy": policy, "reward_model": reward_model, "config": str(args.config),
                                      "minutes": (time.perf_counter() - began) / 60}
    (args.work / "report.json").write_text(json.dumps(result, indent=2))
    print(f"\nreport: {args.work / 'report.json'} ({result['minutes']:.1f} minutes this run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
