"""Command line for a round's data and training stages: ``evomath data ...`` and ``evomath train ...``.

``add_data_commands`` / ``add_train_commands`` mount the groups on the ``evomath`` parser; this module
also runs on its own (``python -m training.cli``), which is what ``accelerate launch`` starts on every
GPU when more than one is visible. Heavy imports happen inside the commands, so ``--help`` is quick.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from evomath.config import add_section_flags, add_set_flag


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
    pairs.set_defaults(func=cmd_pairs)


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
    from evomath.tree import read_trees
    from training.buckets import bucket_counts, hard_problem_ids

    trees = list(read_trees(args.trees))
    result = {"counts": bucket_counts(trees), "hard_problem_ids": hard_problem_ids(trees)}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
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
            raise ValueError("--prompt-style chat needs --model: its chat template renders the prompts")
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
                         progress=True)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_train_sft(args) -> int:
    from training.sft import train_sft

    return _train(args, "sft", train_sft, args.data)


def cmd_train_ppm(args) -> int:
    from training.ppm import train_ppm

    return _train(args, "ppm", train_ppm, args.pairs)


def _train(args, section: str, train_fn, data_path: Path) -> int:
    """Run in-process on one device; on several GPUs re-launch this command under accelerate + FSDP."""
    command = _relaunch_command()
    if command or args.print_command:
        print(" ".join(command or [sys.executable, "-m", "training.cli", *_train_argv()]))
        if args.print_command:
            return 0
        return subprocess.run(command).returncode
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
    parser = argparse.ArgumentParser(prog="python -m training.cli", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_data_commands(sub)
    add_train_commands(sub)
    from evomath.commands import run_command

    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
