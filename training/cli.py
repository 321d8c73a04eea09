"""Command line for a round's data and training stages: ``evomath data ...`` and ``evomath train ...``.

``add_data_commands`` / ``add_train_commands`` mount the groups on the ``evomath`` parser; this module
also runs on its own (``python -m training.cli``), which is what ``accelerate launch`` starts on every
GPU when more than one is visible. Heavy imports happen inside the commands, so ``--help`` is quick.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

from evomath.config import add_section_flags, add_set_flag
from evomath.errors import InputError


def add_data_commands(subparsers) -> None:
    data = subparsers.add_parser(
        "data",
        help="derive a round's training data from its search trees",
        description="Turn a round's MCTS trees (JSONL) into difficulty buckets, SFT data and PPM pairs.",
    )
    sub = data.add_subparsers(dest="data_command", required=True)

    buckets = sub.add_parser(
        "buckets",
        help="count easy / medium / hard problems and list the hard ones",
        description="easy: every answered rollout correct; medium: mixed; hard: none correct (or no answer "
        "at all). Hard problems are the ones to give extra rollouts.",
    )
    buckets.add_argument("--trees", required=True, type=Path, help="trees JSONL from the search")
    buckets.add_argument("--out", type=Path, help="also write {counts, hard_problem_ids} as JSON here")
    buckets.set_defaults(func=cmd_buckets)

    sft = sub.add_parser(
        "sft",
        help="select the policy's SFT data: top correct trajectories per problem",
        description="Per problem, the top-k correct trajectories by average step Q (ties: higher minimum Q), "
        "dropping any whose code errored, rendered as prompt/completion rows.",
    )
    sft.add_argument("--trees", required=True, type=Path, help="trees JSONL from the search")
    sft.add_argument("--out", required=True, type=Path, help="SFT JSONL to write")
    sft.add_argument("--model", help="model whose chat template renders prompts (needed by --prompt-style chat)")
    sft.add_argument("--top-k", type=int, default=2, help="trajectories per problem (rStar: 2)")
    _add_config_args(sft, ("search", ["step_format", "prompt_style"]))
    sft.set_defaults(func=cmd_sft_data)

    pairs = sub.add_parser(
        "pairs",
        help="build the PPM's preference pairs from the trees",
        description="At each expanded node, up to 2 children leading to correct answers (highest Q) against up "
        "to 2 leading only to failures (lowest Q), plus final-answer pairs of whole trajectories.",
    )
    pairs.add_argument("--trees", required=True, type=Path, help="trees JSONL from the search")
    pairs.add_argument("--out", required=True, type=Path, help="pairs JSONL to write")
    _add_config_args(pairs, ("search", ["step_format"]), ("ppm", ["min_q_margin", "min_edit_distance", "max_pairs",
                                                                  "seed"]))
    pairs.add_argument("--outcome-only", action="store_true",
                       help="whole-solution pairs only (rStar's ORM baseline), no step pairs")
    pairs.set_defaults(func=cmd_pairs)
    _add_steps_command(sub)


def _add_steps_command(sub) -> None:
    steps = sub.add_parser(
        "steps",
        help="per-step labels for a PRM, PQM or value head, from trees or from the completer's annotations",
        description="From search trees (--trees): every answered trajectory, each step labelled with its Q (q), the "
        "share of graded answers below it that are right (soft) or whether any is (hard). From annotations "
        "(--annotations, written by `evomath annotate`): Math-Shepherd's hard or soft estimates. From trees of demo "
        "problems with --labels checked --problems BENCHMARK: the demo generator's exact step checker's labels.",
    )
    source = steps.add_mutually_exclusive_group(required=True)
    source.add_argument("--trees", type=Path, help="trees JSONL from the search")
    source.add_argument("--annotations", type=Path, help="annotations JSONL from `evomath annotate`")
    steps.add_argument("--out", required=True, type=Path, help="step-label JSONL to write")
    steps.add_argument("--labels", choices=("q", "soft", "hard", "checked"), required=True,
                       help="q: the step's Q (PQM, value head); soft/hard: the Monte-Carlo estimates (PRM); "
                       "checked: 1 until the first step the demo generator's exact checker marks wrong (PRM; "
                       "demo problems only, with --problems)")
    steps.add_argument("--problems", default=None,
                       help="with --labels checked: the demo benchmark the trees were searched on, e.g. demo_train:1-2")
    _add_config_args(steps, ("search", ["step_format"]))
    steps.set_defaults(func=cmd_steps)


def add_train_commands(subparsers) -> None:
    train = subparsers.add_parser(
        "train",
        help="fine-tune the policy or train the PPM",
        description="Train a round's models into plain model directories (vLLM and transformers load them). "
        "With more than one GPU visible, the command re-launches itself under accelerate with FSDP.",
    )
    sub = train.add_subparsers(dest="train_command", required=True)

    sft = sub.add_parser(
        "sft",
        help="supervised fine-tuning of the policy on SFT data (loss on the completion only)",
        description="TRL SFTTrainer, full or LoRA (merged back); the output directory appears only when complete.",
    )
    sft.add_argument("--data", required=True, type=Path, help="SFT JSONL from `data sft`")
    _add_train_args(sft, "sft")
    sft.set_defaults(func=cmd_train_sft)

    ppm = sub.add_parser(
        "ppm",
        help="train the process preference model on PPM pairs",
        description="Initialised from the policy, scalar head bounded by tanh, Bradley-Terry loss over the "
        "bounded scores; reports pair accuracy on held-out problems.",
    )
    ppm.add_argument("--pairs", required=True, type=Path, help="pairs JSONL from `data pairs`")
    _add_train_args(ppm, "ppm")
    ppm.set_defaults(func=cmd_train_ppm)

    orm = sub.add_parser(
        "orm", help="train rStar's outcome reward model baseline on whole-solution pairs",
        description="The PPM's tanh head and Bradley-Terry loss over whole-solution pairs (`data pairs --outcome-only`).",
    )
    orm.add_argument("--pairs", required=True, type=Path, help="outcome pairs JSONL from `data pairs --outcome-only`")
    _add_train_args(orm, "ppm")
    orm.set_defaults(func=cmd_train_orm)

    for kind, section, what in (("prm", "prm", "Math-Shepherd's process reward model: per-step cross-entropy on "
                                 "hard or soft labels"), ("pqm", "ppm", "rStar's Q-value baseline: per-step MSE to Q")):
        model = sub.add_parser(kind, help=f"train {what.split(':')[0]}", description=f"{what}; a scalar head on the "
                               "policy read at each step's end, served through the same scorer as the PPM.")
        model.add_argument("--steps", required=True, type=Path, help="step-label JSONL from `data steps`")
        _add_train_args(model, section)
        model.set_defaults(func=cmd_train_step_reward, kind=kind)

    _add_rl_command(sub)

    value = sub.add_parser(
        "value", help="train AlphaMath's value head jointly with the policy's SFT",
        description="SFT loss on the correct solutions + beta * MSE between the value head at each step's end and the "
        "step's Q (positive and negative steps); one checkpoint vLLM generates from, the head beside it.",
    )
    value.add_argument("--data", required=True, type=Path, help="SFT JSONL from `data sft`")
    value.add_argument("--steps", required=True, type=Path, help="Q-labelled steps from `data steps --labels q`")
    _add_train_args(value, "value")
    value.set_defaults(func=cmd_train_value)


def _add_rl_command(sub) -> None:
    rl = sub.add_parser(
        "rl", help="step-level RL of the policy with a process reward model (Math-Shepherd's step-by-step PPO, as GRPO)",
        description="TRL GRPOTrainer on the problems: the gold reward per completion, plus (--rewards process) the "
        "reward model's score at every step's end summed from each token on; a KL penalty to the starting policy; "
        "stops when the reward model's score rises while gold accuracy falls (--hack-window, --hack-tolerance).",
    )
    rl.add_argument("--policy", required=True, help="the SFT policy to start from: directory, embedded name, hub id "
                    "or models:/ URI")
    rl.add_argument("--reward-model", type=Path, help="reward-model directory of kind --reward-kind (needed by "
                    "--rewards process; with outcome rewards it is only tracked)")
    rl.add_argument("--problems", required=True, help="training problems: benchmark (demo_train:1-2 ...), JSONL path "
                    "or hf:owner/name")
    rl.add_argument("--limit", type=int, help="a seeded random subset of this many problems")
    rl.add_argument("--out", required=True, type=Path, help="model directory to create")
    rl.add_argument("--curves", type=Path, help="per-step log (JSONL); default: <out>-curves.jsonl")
    rl.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (smoke tests)")
    rl.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    rl.add_argument("--no-progress", action="store_true", help="no progress bars or per-step logs")
    rl.add_argument("--print-command", action="store_true",
                    help="print the command that would train (accelerate launch on several GPUs) and exit")
    _add_config_args(rl, ("rl", None), ("search", ["step_format", "prompt_style"]))
    rl.set_defaults(func=cmd_train_rl)


def _add_config_args(parser, *sections: tuple[str, list[str] | None]) -> None:
    """--config, the flags of the config fields the command reads (spelled like the fields), and --set."""
    parser.add_argument("--config", type=Path, help="experiment YAML; the flags below override its values")
    for section, fields in sections:
        add_section_flags(parser, section, fields)
    add_set_flag(parser)


def _add_train_args(parser, section: str) -> None:
    parser.add_argument("--base", required=True, help="starting model: embedded name, directory, hub id or models:/ URI")
    parser.add_argument("--out", required=True, type=Path, help="model directory to create")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (smoke tests)")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or per-step logs")
    parser.add_argument("--print-command", action="store_true",
                        help="print the command that would train (accelerate launch on several GPUs) and exit")
    _add_config_args(parser, (section, None))


def cmd_buckets(args) -> int:
    from evomath.files import write_json
    from evomath.tree import read_trees
    from training.buckets import bucket_counts, hard_problem_ids

    trees = list(read_trees(args.trees))
    result = {"counts": bucket_counts(trees), "hard_problem_ids": hard_problem_ids(trees)}
    if args.out:
        write_json(args.out, result)
    counts = result["counts"]
    print(f"{len(trees)} problems: easy {counts['easy']}, medium {counts['medium']}, hard {counts['hard']}")
    return 0


def cmd_sft_data(args) -> int:
    from evomath.formats import make_format
    from training.sft_data import chat_fn, make_sft_data

    search = _experiment(args).search
    chat = None
    if search.prompt_style.startswith("chat"):
        if not args.model:
            raise InputError("--prompt-style chat needs --model: its chat template renders the prompts")
        from evomath.models import resolve_model

        chat = chat_fn(resolve_model(args.model))
    fmt = make_format(search.step_format, search.prompt_style, chat=chat)
    summary = make_sft_data(args.trees, args.out, fmt, top_k=args.top_k, progress=True)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_pairs(args) -> int:
    from evomath.formats import make_format
    from training.ppm_pairs import make_pairs

    experiment = _experiment(args)
    summary = make_pairs(args.trees, args.out, make_format(experiment.search.step_format), experiment.ppm,
                         progress=True, outcome_only=args.outcome_only)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_steps(args) -> int:
    from evomath.formats import make_format
    from evomath.problems import load_benchmark
    from evomath.tree import read_trees
    from training.step_rewards import (
        annotation_rows,
        checked_step_rows,
        label_summary,
        read_annotations,
        tree_step_rows,
        write_step_rows,
    )

    fmt = make_format(_experiment(args).search.step_format)
    if args.problems and args.labels != "checked":
        raise InputError(f"--problems is read with --labels checked only (not {args.labels})")
    if args.labels == "checked":
        if not (args.trees and args.problems):
            raise InputError("--labels checked reads the trees' steps against their problems: give --trees and --problems")
        problems = {p.id: p for p in load_benchmark(args.problems)}
        rows = checked_step_rows(read_trees(args.trees), fmt, problems)
    elif args.trees:
        rows = tree_step_rows(read_trees(args.trees), fmt, args.labels)
    else:
        if args.labels == "q":
            raise InputError("--labels q reads Q values off trees: give --trees (annotations carry hard and soft)")
        rows = annotation_rows(read_annotations(args.annotations, args.labels), fmt, args.labels)
    write_step_rows(args.out, rows)
    print(json.dumps(label_summary(rows), indent=2))
    return 0


def cmd_train_sft(args) -> int:
    from training.sft import train_sft

    return _train(args, "sft", train_sft, args.data)


def cmd_train_ppm(args) -> int:
    from training.ppm import train_ppm

    return _train(args, "ppm", train_ppm, args.pairs)


def cmd_train_orm(args) -> int:
    from training.ppm import train_ppm

    return _train(args, "ppm", functools.partial(train_ppm, kind="orm"), args.pairs)


def cmd_train_step_reward(args) -> int:
    from training.step_rewards import train_step_reward

    return _train(args, "prm" if args.kind == "prm" else "ppm", functools.partial(train_step_reward, kind=args.kind),
                  args.steps)


def cmd_train_value(args) -> int:
    from training.value_head import train_value_head

    return _train(args, "value", lambda data, *rest, **kwargs: train_value_head(data, args.steps, *rest, **kwargs),
                  args.data)


def cmd_train_rl(args) -> int:
    """The RL run in-process, or re-launched under accelerate on several GPUs; exits 1 when the
    reward-hacking guard stopped it (its one-line reason printed)."""
    relaunched = _relaunched(args)
    if relaunched is not None:
        return relaunched
    from evomath.formats import make_format
    from evomath.models import resolve_model
    from evomath.problems import load_benchmark
    from training.rl import train_rl
    from training.sft_data import chat_fn

    experiment = _experiment(args)
    policy = resolve_model(args.policy)
    search = experiment.search
    chat = chat_fn(policy) if search.prompt_style.startswith("chat") else None
    problems = load_benchmark(args.problems, limit=args.limit, seed=experiment.data.seed)
    metrics = train_rl(problems, policy, args.reward_model, args.out, experiment.rl,
                       make_format(search.step_format, search.prompt_style, chat), progress=not args.no_progress,
                       overwrite=args.overwrite, max_steps=args.max_steps, curves=args.curves)
    print(json.dumps(metrics, indent=2))
    if metrics["stopped"]:
        print(metrics["stopped"], file=sys.stderr)
        return 1
    return 0


def _relaunched(args) -> int | None:
    """On several GPUs (or with --print-command) the command line under accelerate + FSDP, run or
    printed; None: train here."""
    command = _relaunch_command()
    if not (command or args.print_command):
        return None
    print(" ".join(command or [sys.executable, "-m", "training.cli", *_train_argv()]))
    if args.print_command:
        return 0
    return subprocess.run(command).returncode


def _train(args, section: str, train_fn, data_path: Path) -> int:
    """Run in-process on one device; on several GPUs re-launch this command under accelerate + FSDP."""
    relaunched = _relaunched(args)
    if relaunched is not None:
        return relaunched
    from evomath.models import resolve_model

    config = getattr(_experiment(args), section)
    metrics = train_fn(
        data_path, resolve_model(args.base), args.out, config,
        progress=not args.no_progress, overwrite=args.overwrite, max_steps=args.max_steps,
    )
    print(json.dumps(metrics, indent=2))
    return 0


def _experiment(args):
    """The config from --config (or the defaults) with the flags and --set that were given applied."""
    from evomath.config import ExperimentConfig, config_from_args, load_config

    return config_from_args(args, load_config(args.config) if args.config else ExperimentConfig())


def _relaunch_command() -> list[str] | None:
    """``accelerate launch`` with FSDP when several GPUs are visible and this is not already a launched rank."""
    if "RANK" in os.environ:
        return None
    import torch

    gpus = torch.cuda.device_count()
    if gpus <= 1:
        return None
    from training.model_io import accelerate_command

    return accelerate_command(_train_argv(), gpus)


def _train_argv() -> list[str]:
    """This invocation's arguments from the ``train`` group on, to hand to ``python -m training.cli``."""
    argv = [arg for arg in sys.argv[1:] if arg != "--print-command"]
    return argv[argv.index("train"):] if "train" in argv else argv


def main(argv: list[str] | None = None) -> int:
    from evomath.commands import add_debug_flag, run_command

    parser = argparse.ArgumentParser(prog="python -m training.cli", description=__doc__.splitlines()[0])
    add_debug_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    add_data_commands(sub)
    add_train_commands(sub)

    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
