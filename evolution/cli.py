"""``evomath run`` (an evolution or one round, in this process, no servers) and ``evomath plan`` (where
a config's models live on this machine's GPUs, what a round costs, and GPU-hours at rStar's scale)."""

from __future__ import annotations

import json
from pathlib import Path


def add_loop_commands(sub) -> None:
    run = sub.add_parser(
        "run",
        help="run a config's self-evolution (or one round) in this process, without servers",
        description="The base model's evaluation and rounds 1..N of CONFIG through the same stages the "
        "Prefect flows run (records under run_dir/name/round-k/; a rerun skips finished stages), in this "
        "process with no Prefect or MLflow server. The memory plan is checked before any work starts.",
    )
    run.add_argument("config", type=Path, help="experiment YAML (configs/*.yaml)")
    _add_set_arg(run)
    run.add_argument("--rounds", type=int, help="rounds to run (default: the config's)")
    run.add_argument("--round", type=int, dest="only_round", help="run only this round (no base evaluation)")
    run.set_defaults(func=cmd_run)

    plan = sub.add_parser(
        "plan",
        help="print where the engine, PPM and training live on the GPUs, and a round's budget",
        description="From CONFIG and the models' config.json files (no weights are downloaded): the memory "
        "plan on this machine's GPUs (or --gpus/--gpu-memory-gb), the vLLM memory fraction, the rollouts and "
        "tokens of each round, and the GPU-hours at rStar-Math's scale (747k problems x 16 rollouts). Every "
        "assumption is printed. Exits 1 when the plan does not fit.",
    )
    plan.add_argument("config", type=Path, help="experiment YAML (configs/*.yaml)")
    _add_set_arg(plan)
    plan.add_argument("--gpus", type=int, help="plan for this many GPUs instead of the visible ones")
    plan.add_argument("--gpu-memory-gb", type=float, default=80.0, help="memory of each GPU with --gpus (default 80)")
    plan.add_argument("--trees", type=Path, help="saved trees (JSONL) to measure generated tokens per rollout on")
    plan.add_argument("--gpu-tokens-per-s", type=float, help="measured generation throughput per GPU (default: assumed)")
    plan.add_argument("--hard-share", type=float, default=0.3,
                      help="share of problems that get the extra rollouts for hard problems (default 0.3)")
    plan.set_defaults(func=cmd_plan)


def _add_set_arg(parser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a config field, e.g. --set search.rollouts=4 --set policy=owner/name "
                        "(repeatable; values are YAML)")


def _config(args):
    from evomath.config import apply_overrides, load_config

    return apply_overrides(load_config(args.config), args.overrides)


def cmd_run(args) -> int:
    from evolution import stages

    config = _config(args)
    if args.rounds is not None:
        config = config.model_copy(update={"rounds": args.rounds})
    print(stages.check_plan(config).table())
    if args.only_round is not None:
        results = [stages.run_round(stages.round_context(config, args.only_round))]
        rounds = [args.only_round]
    else:
        results = stages.run_evolution(config)
        rounds = list(range(len(results)))
    for k, result in zip(rounds, results):
        row = {stage: {m: v for m, v in metrics.items() if m != "artifacts"} for stage, metrics in result.items()}
        print(f"round {k}: {json.dumps(row, default=str)}")
    return 0


def cmd_plan(args) -> int:
    from evolution import stages
    from evomath import plan as planning
    from evomath.tree import read_trees

    config = _config(args)
    devices = planning.Devices(args.gpus, int(args.gpu_memory_gb * planning.GiB)) if args.gpus else None
    memory = planning.plan_for(config, stages.uses_reward_model(config), devices)
    policy = planning.model_shape(config.policy)
    print(f"policy {policy.name}: {policy.params / 1e9:.2f}B parameters, {policy.layers} layers, "
          f"KV {policy.kv_bytes_per_token() / 1024:.0f} KiB/token (bf16); the reward model has the policy's shape")
    print(memory.table())
    trees = list(read_trees(args.trees)) if args.trees else []
    problems = len(stages.training_problems(config))
    print(planning.describe_budget(config, policy, problems, planning.tokens_per_rollout(config, trees),
                                   args.hard_share, args.gpu_tokens_per_s))
    if memory.problems:
        print("the plan does not fit: " + "; ".join(memory.problems))
        return 1
    return 0
