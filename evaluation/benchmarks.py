"""The problems an evaluation runs on, by name: the registry in ``evomath.problems`` plus user
JSONL files with their own field names."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from evomath.errors import InputError
from evomath.problems import BENCHMARKS, Problem, load_benchmark, load_problems


def split_names(values: Iterable[str] | None) -> list[str]:
    """``--benchmark a,b --benchmark c`` -> [a, b, c], duplicates dropped."""
    names = [n.strip() for value in values or () for n in value.split(",")]
    return list(dict.fromkeys(n for n in names if n))


def label(name: str) -> str:
    """A benchmark's name in records and file names: registry names as they are, a file by its
    stem, a hub id with path characters replaced."""
    if name in BENCHMARKS:
        return name
    if name.startswith("hf:"):
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", name[len("hf:") :])
    return Path(name).stem


def load_suite(
    names: Iterable[str],
    *,
    limit: int | None = None,
    seed: int = 0,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
) -> dict[str, list[Problem]]:
    """Benchmark label -> problems (a seeded subset of ``limit``); field names apply to JSONL paths."""
    fields = dict(question_field=question_field, answer_field=answer_field, id_field=id_field)
    suite = {}
    for name in names:
        if name not in BENCHMARKS and name.endswith(".jsonl") and any(fields.values()):
            problems = load_problems(name, limit=limit, seed=seed, **fields)
        else:
            problems = load_benchmark(name, limit=limit, seed=seed)
        if not problems:
            raise InputError(f"benchmark {name!r} has no problems")
        suite[label(name)] = problems
    if not suite:
        raise InputError("no benchmark given")
    return suite
