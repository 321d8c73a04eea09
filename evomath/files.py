"""Artifact files: written whole or not at all, durably, and read with errors that name the file and line.

Every writer goes through ``atomic_open``: the content goes to a temporary file beside the target,
is flushed and fsynced, renamed over the target, and the directory is fsynced, so a crash, a kill or
a full disk leaves either the old file or the new one, never a torn one, and no temporary behind.
Appends (how searches keep finished trees) are fsynced line by line instead.

Every reader checks what it reads and raises ``ArtifactError`` with the file, the line and the field;
only a search resuming its own appended file forgives a torn last line (``tolerate_torn_tail``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from evomath.errors import InputError


class ArtifactError(InputError):
    """An artifact file that is not what it should be; the message is one line, ``FILE:LINE: FIELD: what is wrong``."""


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


def jsonl_lines(path: str | Path, *, tolerate_torn_tail: bool = False) -> Iterator[tuple[str, str]]:
    """``("FILE:LINE", text)`` for every line that is not blank, the numbers counting every line.

    A file that cannot be read or a line that is not UTF-8 (a binary file) raises ``ArtifactError``.
    ``tolerate_torn_tail`` drops an unterminated last line that is not JSON (a crash mid-append): only
    a writer resuming its own appended file passes it; a file a user gives is read whole or refused.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ArtifactError(f"{path}: cannot read it ({err.strerror})") from None
    *lines, tail = data.split(b"\n")
    if tail.strip() and not (tolerate_torn_tail and not _is_json(tail)):
        lines.append(tail)
    for lineno, raw in enumerate(lines, 1):
        if raw.strip():
            yield f"{path}:{lineno}", _decode(raw, f"{path}:{lineno}")


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False
    return True


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ArtifactError(f"{where}: not UTF-8 text (a binary file?)") from None


def parse_json_object(text: str, where: str) -> dict:
    """One JSONL line as the object every artifact row is."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(row, dict):
        raise ArtifactError(f"{where}: a row must be a JSON object, not {type(row).__name__}")
    return row


def read_jsonl(path: str | Path, *, tolerate_torn_tail: bool = False) -> Iterator[dict]:
    """Yield rows (JSON objects); a line that is not one raises ``ArtifactError`` naming the file and line."""
    for where, text in jsonl_lines(path, tolerate_torn_tail=tolerate_torn_tail):
        yield parse_json_object(text, where)


def resume_jsonl(path: str | Path) -> list[dict]:
    """The rows an interrupted run appended to ``path`` (none if it is absent), its torn last line
    forgiven and cut off, or a whole but unterminated one ended, so the next append starts a line."""
    path = Path(path)
    if not path.exists():
        return []
    rows = list(read_jsonl(path, tolerate_torn_tail=True))
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        start = data.rfind(b"\n") + 1
        with path.open("r+b") as fh:
            if _is_json(data[start:]):
                fh.seek(0, os.SEEK_END)
                fh.write(b"\n")
            else:
                fh.truncate(start)
            fh.flush()
            os.fsync(fh.fileno())
    return rows


# A field's expected type, as said in an error.
_KINDS = {str: "text", list: "a list", dict: "an object", bool: "true or false", int: "an integer",
          float: "a number"}


def read_records(path: str | Path, fields: Mapping[str, type], *,
                 tolerate_torn_tail: bool = False) -> Iterator[tuple[str, dict]]:
    """``("FILE:LINE", row)`` for every row, each holding every one of ``fields`` with its type (float
    takes integers too, and no number is a bool); extra keys are allowed. The one check of a row's
    shape shared by every reader of training rows; callers check values further with ``where``."""
    for where, text in jsonl_lines(path, tolerate_torn_tail=tolerate_torn_tail):
        row = parse_json_object(text, where)
        for name, kind in fields.items():
            if name not in row:
                raise ArtifactError(f"{where}: {name}: missing (fields present: {', '.join(row) or 'none'})")
            if not has_type(row[name], kind):
                raise ArtifactError(f"{where}: {name}: expected {_KINDS[kind]}, got {_shown(row[name])}")
        yield where, row


def has_type(value, kind: type) -> bool:
    """JSON's types as Python sees them: an integer is a float, a bool is no number."""
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, (int, float) if kind is float else kind)


def _shown(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
