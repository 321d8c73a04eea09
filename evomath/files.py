"""Artifact files: written whole or not at all, durably, and read with errors that name the file and line.

Every writer goes through ``atomic_open``: the content goes to a temporary file beside the target,
is flushed and fsynced, renamed over the target, and the directory is fsynced, so a crash, a kill or
a full disk leaves either the old file or the new one, never a torn one, and no temporary behind.
Appends (how searches keep finished trees) are fsynced line by line instead.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new file in ``path`` survive a power cut (a no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def private_dir(path: str | Path) -> Path:
    """A directory only its owner can enter (0700), created with its missing parents as such: run
    directories hold every problem's gold answer, which model-written code must never read."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for created in missing:
        created.chmod(0o700)  # mkdir's parents=True ignores mode for the parents it makes
    path.chmod(0o700)
    return path


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path`` durably, on an
    error (a full disk included) it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_open(path) as fh:
        fh.write(text)
    return Path(path)


def write_json(path: str | Path, obj, indent: int | None = 2) -> Path:
    return write_text(path, json.dumps(obj, indent=indent) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    with atomic_open(path) as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return Path(path)


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Append rows (one line each) and fsync, so an interrupted writer keeps what it finished."""
    with Path(path).open("a") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Yield rows; a line that is not JSON raises an error naming the file and line.

    A torn last line (a crash mid-append) is skipped, since appends are the resume mechanism.
    """
    path = Path(path)
    with path.open() as fh:
        lines = fh.readlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as err:
            if lineno == len(lines) and not line.endswith("\n"):
                return
            raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
