"""Named fault points: places where a crash test kills the process, to show that nothing is lost.

``fault_point(name)`` does nothing unless the environment variable ``EVOMATH_FAULT`` names that
point. ``EVOMATH_FAULT=name`` kills the process the first time the point is reached,
``EVOMATH_FAULT=name:N`` the N-th time (counted in this process). The kill is SIGKILL, sent by the
process to itself: no handler, no ``finally``, no atexit runs, as with the OOM killer or a power
cut (except that written data has reached the kernel). One line on stderr names the point first,
so a test can tell this kill from any other.

The points (docs/CONTRACTS.md): ``generate:tree`` (a tree appended to trees.jsonl),
``extra_rollouts:tree`` (a tree's extra search saved), ``stage:done`` (a stage's record written),
``train:step`` (a trainer's optimizer step ended), ``model:before_rename`` (a complete model
directory staged, not yet renamed into place).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "EVOMATH_FAULT"
POINTS = ("generate:tree", "extra_rollouts:tree", "stage:done", "train:step", "model:before_rename")

_hits: Counter[str] = Counter()


def target() -> tuple[str, int] | None:
    """The point ``EVOMATH_FAULT`` names and at which hit it kills (1-based), or None when unset."""
    spec = os.environ.get(ENV)
    if not spec:
        return None
    name, _, count = spec.rpartition(":")
    if name and count.isdigit() and int(count) >= 1:
        return name, int(count)
    return spec, 1


def armed(name: str) -> bool:
    """Is ``name`` the point ``EVOMATH_FAULT`` names (for points that cost something to set up)?"""
    chosen = target()
    return chosen is not None and chosen[0] == name


def fault_point(name: str) -> None:
    """Kill this process here if ``EVOMATH_FAULT`` says so (see the module's docstring)."""
    chosen = target()
    if chosen is None or chosen[0] != name:
        return
    _hits[name] += 1
    if _hits[name] == chosen[1]:
        os.write(2, f"evomath: fault point {name} reached {_hits[name]} time(s) ({ENV}): SIGKILL\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
