"""The ``evomath`` command: every command group, assembled at the top of the layers.

Each group lives beside the code it drives (core: models, sample, search; training: data, train;
evaluation: evaluate; the loop: run, plan; the services: up, down, status, demo) and adds its own
subparser here, so ``evomath --help`` lists everything. Importing stays cheap: heavy imports happen
inside the command functions.
"""

from __future__ import annotations

import argparse
import sys

from evomath.commands import add_debug_flag, add_model_commands, add_sample_command, run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evomath",
        description="Self-evolving small math models: MCTS over verified steps, SFT on the best "
        "trajectories, a process preference model, repeated for rounds.",
    )
    add_debug_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _command_groups():
        add(sub)
    return parser


def _command_groups():
    from deployments.servers import add_server_commands
    from evaluation.cli import add_evaluate_command
    from evolution.cli import add_loop_commands
    from evomath.search.cli import add_annotate_command, add_search_command
    from training.cli import add_data_commands, add_train_commands

    return [add_model_commands, add_sample_command, add_search_command, add_annotate_command, add_data_commands,
            add_train_commands, add_evaluate_command, add_loop_commands, add_server_commands]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if any(str(v).startswith(("models:/", "runs:/")) for v in vars(args).values()):
        import tasks.tracking  # noqa: F401  (resolves MLflow model URIs for the core's model store)
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
