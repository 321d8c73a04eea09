"""Problems with ground-truth answers: the shared benchmarks, user JSONL files, the Hugging Face Hub
and the generated demo set, all as one list type."""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from evomath.errors import InputError, MissingInputError
from evomath.problem import Problem

log = logging.getLogger(__name__)

AnswerFormat = Literal["auto", "plain", "gsm8k"]
QUESTION_FIELDS = ("question", "problem")
ANSWER_FIELDS = ("answer", "final_answer")
ID_FIELDS = ("id", "unique_id", "problem_id")


class ProblemFileError(InputError):
    """A malformed problem record; the message starts with FILE:LINE."""


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    description: str
    path: str | None = None  # relative to the data directory
    answer_format: AnswerFormat = "plain"
    generate: Callable[[], list[Problem]] | None = None  # for generated sets (no file)


# Held-out demo problems: enough to resolve a few points (a 95% interval of about +-3 points at 1000),
# and a smaller split is a prefix of this one. The phrasing family (generalisation, never trained on)
# is as large.
DEMO_TEST_SIZE = 1000
DEMO_SIZES = {"demo_train": 2000, "demo_test": DEMO_TEST_SIZE, "demo_phrasing": DEMO_TEST_SIZE}
DEMO_MAX_OPS = {"demo_train": 4, "demo_test": 4, "demo_phrasing": 2}


def _demo(name: str, ops: tuple[int, ...] | None = None) -> Callable[[], list[Problem]]:
    def generate() -> list[Problem]:  # generated on first use
        if name == "demo_phrasing":
            from evomath.demo_phrasing import phrasing_problems

            return phrasing_problems(DEMO_SIZES[name], ops=ops or (1, 2))
        from evomath.demo_data import demo_problems

        return demo_problems(name.removeprefix("demo_"), DEMO_SIZES[name], ops=ops or (1, 2, 3, 4))

    return generate


def _demo_ops(name: str) -> BenchmarkSpec | None:
    """``demo_train:1-2`` / ``demo_test:1-2`` / ``demo_phrasing:1``: a generated set restricted to
    that many operations."""
    base, _, span = name.partition(":")
    if not span or base not in DEMO_SIZES:
        return None
    top = DEMO_MAX_OPS[base]
    low, _, high = span.partition("-")
    if not (low.isdigit() and (high or low).isdigit() and 1 <= int(low) <= int(high or low) <= top):
        raise InputError(f"benchmark {name!r}: operations must be a range within 1-{top}, like {base}:1-2")
    ops = tuple(range(int(low), int(high or low) + 1))
    return BenchmarkSpec(name, f"{BENCHMARKS[base].description}, {span} operations", generate=_demo(base, ops))


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in [
        BenchmarkSpec("gsm8k", "GSM8K test, 1319 grade-school word problems", "gsm8k_test/test.jsonl", "gsm8k"),
        BenchmarkSpec("gsm8k_train", "GSM8K train, 7473 problems", "gsm8k_train/train.jsonl", "gsm8k"),
        BenchmarkSpec("math500", "MATH-500 (PRM800K test split)", "math500/test.jsonl"),
        BenchmarkSpec("math_train", "MATH train, 7500 problems (2 without answers skipped)", "math_train/train.jsonl"),
        BenchmarkSpec("aime24", "AIME 2024, 30 problems", "aime24/test.jsonl"),
        BenchmarkSpec("amc23", "AMC 2023, 40 problems", "amc23/test.jsonl"),
        BenchmarkSpec("demo_train", "generated arithmetic word problems, 1-4 operations", generate=_demo("demo_train")),
        BenchmarkSpec("demo_test", "held-out generated arithmetic word problems", generate=_demo("demo_test")),
        BenchmarkSpec("demo_phrasing", "held-out arithmetic word problems, 1-2 operations, in sentence shapes the "
                      "demo generator never writes (generalisation; never trained on)", generate=_demo("demo_phrasing")),
    ]
}


def shared_data_dir() -> Path:
    """$EVOMATH_DATA_DIR, else <repo>/../shared/data, else <repo>/shared/data."""
    env = os.environ.get("EVOMATH_DATA_DIR")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise MissingInputError(f"EVOMATH_DATA_DIR={env} is not a directory")
        return path
    repo = Path(__file__).resolve().parents[1]
    for path in (repo.parent / "shared" / "data", repo / "shared" / "data"):
        if path.is_dir():
            return path
    raise MissingInputError(
        f"no benchmark data found beside {repo}; set EVOMATH_DATA_DIR to the folder holding "
        "gsm8k_test/, math500/, ... (e.g. export EVOMATH_DATA_DIR=/path/to/shared/data)"
    )


# ---------------------------------------------------------------------------------------------
# Rows to problems


def _pick(row: dict, explicit: str | None, candidates: tuple[str, ...], where: str) -> str:
    """The field to read: the explicit one, else the first candidate present."""
    names = (explicit,) if explicit else candidates
    for name in names:
        if name in row:
            return name
    wanted = " or ".join(f"'{n}'" for n in names)
    raise ProblemFileError(f"{where}: field {wanted} missing (fields present: {', '.join(row) or 'none'})")


def _gold(value: Any, fmt: AnswerFormat, where: str, name: str) -> str:
    """Normalise a gold answer: GSM8K "... #### 1,234" -> "1234", float 27.0 -> "27"; AIME "025" kept."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ProblemFileError(f"{where}: field '{name}' must be a string or number, got {type(value).__name__}")
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    if fmt == "gsm8k" or (fmt == "auto" and "####" in text):
        if "####" not in text:
            raise ProblemFileError(f"{where}: field '{name}' has no '#### answer' line")
        text = text.rsplit("####", 1)[1].strip().replace(",", "")
    return text


def _problems_from_rows(
    rows: Iterable[tuple[int, Any]],
    source: str,
    *,
    question_field: str | None,
    answer_field: str | None,
    id_field: str | None,
    answer_format: AnswerFormat,
    id_prefix: str | None,
    line_prefix: str,
) -> list[Problem]:
    """Validate rows (line number, parsed JSON) into problems; rows with an empty answer are skipped."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    skipped = 0
    for line, row in rows:
        where = f"{source}:{line}"
        if not isinstance(row, dict):
            raise ProblemFileError(f"{where}: expected a JSON object, got {type(row).__name__}")
        qf = _pick(row, question_field, QUESTION_FIELDS, where)
        af = _pick(row, answer_field, ANSWER_FIELDS, where)
        question = row[qf]
        if not isinstance(question, str) or not question.strip():
            raise ProblemFileError(f"{where}: field '{qf}' must be a non-empty string")
        answer = _gold(row[af], answer_format, where, af)
        if not answer:
            skipped += 1
            continue
        idf = _pick(row, id_field, (), where) if id_field else next((f for f in ID_FIELDS if f in row), None)
        pid = f"{id_prefix or ''}{row[idf]}" if idf else f"{line_prefix if id_prefix is None else id_prefix}{line}"
        if pid in seen:
            raise ProblemFileError(f"{where}: duplicate id '{pid}' (first on line {seen[pid]})")
        seen[pid] = line
        meta = {k: v for k, v in row.items() if k not in (qf, af, idf)}
        if isinstance(row[af], str) and "####" in row[af]:
            meta["solution"] = row[af]
        problems.append(Problem(pid, question, answer, meta))
    if skipped:
        log.warning("%s: skipped %d problem(s) with an empty answer", source, skipped)
    return problems


def _jsonl_rows(path: Path) -> Iterable[tuple[int, Any]]:
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as e:
                raise ProblemFileError(f"{path.name}:{line_no}: invalid JSON ({e.msg})") from None


def subset(problems: list[Problem], limit: int | None, seed: int) -> list[Problem]:
    """A seeded random sample kept in file order; a smaller limit gives a subset of a larger one."""
    if limit is None or limit >= len(problems):
        return problems
    if limit < 0:
        raise InputError(f"limit must be >= 0, got {limit}")
    order = list(range(len(problems)))
    random.Random(seed).shuffle(order)
    return [problems[i] for i in sorted(order[:limit])]


def load_problems(
    path: str | Path,
    *,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    answer_format: AnswerFormat = "auto",
    limit: int | None = None,
    seed: int = 0,
    id_prefix: str | None = None,
) -> list[Problem]:
    """Problems from a JSONL file. Fields are auto-detected when None (question|problem,
    answer|final_answer, id|unique_id|problem_id); without an id the id is "<file stem>-<line>".
    id_prefix, when given, prefixes every id. "auto" reads a GSM8K "#### N" answer where there is
    one. A malformed line raises ProblemFileError("FILE:LINE: ...")."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"problem file not found: {path}")
    problems = _problems_from_rows(
        _jsonl_rows(path),
        path.name,
        question_field=question_field,
        answer_field=answer_field,
        id_field=id_field,
        answer_format=answer_format,
        id_prefix=id_prefix,
        line_prefix=f"{path.stem}-",
    )
    return subset(problems, limit, seed)


def _load_hf(spec: str, limit: int | None, seed: int) -> list[Problem]:
    """``hf:owner/name[/config][:split]`` (split defaults to test) through datasets.load_dataset."""
    from datasets import load_dataset

    name, _, split = spec[len("hf:") :].partition(":")
    parts = name.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise InputError(f"expected hf:owner/name[/config][:split], got {spec!r}")
    config = parts[2] if len(parts) == 3 else None
    rows = load_dataset("/".join(parts[:2]), config, split=split or "test")
    problems = _problems_from_rows(
        enumerate(rows, 1), spec, question_field=None, answer_field=None, id_field=None,
        answer_format="auto", id_prefix=f"{parts[1]}-", line_prefix="",
    )
    return subset(problems, limit, seed)


def load_benchmark(name: str, *, limit: int | None = None, seed: int = 0, data_dir: str | Path | None = None) -> list[Problem]:
    """A named benchmark (see BENCHMARKS), a JSONL path, or "hf:owner/name[/config][:split]"."""
    if name.startswith("hf:"):
        return _load_hf(name, limit, seed)
    spec = BENCHMARKS.get(name) or _demo_ops(name)
    if spec is not None and spec.generate is not None:
        return subset(spec.generate(), limit, seed)
    if spec is not None:
        root = Path(data_dir) if data_dir is not None else shared_data_dir()
        return load_problems(root / spec.path, answer_format=spec.answer_format, limit=limit, seed=seed, id_prefix=f"{name}-")
    if name.endswith(".jsonl") or Path(name).is_file():
        return load_problems(name, limit=limit, seed=seed)
    raise InputError(
        f"unknown benchmark {name!r}; valid names: {', '.join(BENCHMARKS)} (demo_test:1-2 keeps the demo's "
        "1-2 operation problems), a .jsonl path, or hf:owner/name[/config][:split]"
    )
