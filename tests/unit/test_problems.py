"""Problem loading: the shared benchmarks, user JSONL files, subsets, the Hub, the data directory."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from evomath.problems import (
    BENCHMARKS,
    Problem,
    ProblemFileError,
    load_benchmark,
    load_problems,
    shared_data_dir,
)

SIZES = {"gsm8k": 1319, "gsm8k_train": 7473, "math500": 500, "math_train": 7498, "aime24": 30, "amc23": 40}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("name, size", SIZES.items())
def test_shared_benchmarks_load(name, size):
    problems = load_benchmark(name)
    assert len(problems) == size
    assert all(p.question.strip() and p.answer.strip() for p in problems)
    assert len({p.id for p in problems}) == size
    assert all(p.id.startswith(f"{name}-") for p in problems)


def test_gold_answer_formats():
    gsm = load_benchmark("gsm8k")
    assert gsm[0].answer == "18" and "####" in gsm[0].meta["solution"]
    assert all("," not in p.answer and "####" not in p.answer for p in gsm)
    big = [p for p in load_benchmark("gsm8k_train") if "#### 1," in p.meta["solution"]]
    assert big and all(p.answer.isdigit() for p in big)
    amc = {p.id: p.answer for p in load_benchmark("amc23")}
    assert amc["amc23-0"] == "27" and amc["amc23-17"] == "-1"
    aime = {p.id: p.answer for p in load_benchmark("aime24")}
    assert aime["aime24-67"] == "025"
    m500 = load_benchmark("math500")
    assert m500[0].answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert m500[0].meta["level"] == 2 and m500[0].id == "math500-test/precalculus/807.json"


def test_subset_is_seeded_ordered_and_nested():
    full = load_benchmark("gsm8k")
    a = load_benchmark("gsm8k", limit=20, seed=3)
    assert a == load_benchmark("gsm8k", limit=20, seed=3)
    assert a != load_benchmark("gsm8k", limit=20, seed=4)
    index = {p.id: i for i, p in enumerate(full)}
    assert [index[p.id] for p in a] == sorted(index[p.id] for p in a)
    small = load_benchmark("gsm8k", limit=5, seed=3)
    assert set(small) <= set(a)
    assert load_benchmark("aime24", limit=100) == load_benchmark("aime24")
    assert load_benchmark("aime24", limit=0) == []


def test_demo_benchmarks_registered():
    train, test = load_benchmark("demo_train", limit=50), load_benchmark("demo_test")
    assert len(train) == 50 and len(test) == 1000
    assert {p.question for p in train}.isdisjoint(p.question for p in test)
    assert {"demo_train", "demo_test"} <= set(BENCHMARKS)


def test_demo_benchmarks_restricted_to_operations():
    easy = load_benchmark("demo_test:1-2")
    assert len(easy) == 1000 and {p.meta["ops"] for p in easy} == {1, 2}
    assert {p.meta["ops"] for p in load_benchmark("demo_train:3", limit=20)} == {3}
    assert {p.question for p in load_benchmark("demo_train:1-2")}.isdisjoint(p.question for p in easy)
    for bad in ("demo_test:0-2", "demo_test:2-1", "demo_test:x", "demo_test:1-5"):
        with pytest.raises(ValueError, match="range within 1-4"):
            load_benchmark(bad)


def test_unknown_benchmark_lists_valid_names():
    with pytest.raises(ValueError, match="math500.*demo_test.*hf:"):
        load_benchmark("gsm9k")


def test_user_jsonl_autodetects_fields(tmp_path):
    path = write_jsonl(
        tmp_path / "mine.jsonl",
        [
            {"problem": "1+1?", "final_answer": 2},
            "",
            {"question": "Half of 1?", "answer": 0.5, "id": "h"},
            {"question": "GSM style", "answer": "work\n#### 1,234"},
            {"question": "AIME style", "answer": "007"},
        ],
    )
    problems = load_problems(path)
    assert [(p.id, p.answer) for p in problems] == [("mine-1", "2"), ("h", "0.5"), ("mine-4", "1234"), ("mine-5", "007")]
    assert load_benchmark(str(path)) == problems


def test_explicit_fields(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"q": "Q1", "a": "5", "key": "k1"}])
    [p] = load_problems(path, question_field="q", answer_field="a", id_field="key")
    assert (p.id, p.question, p.answer) == ("k1", "Q1", "5")


def test_plain_format_keeps_hashes(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"question": "Q", "answer": "a #### b"}])
    assert load_problems(path, answer_format="plain")[0].answer == "a #### b"


@pytest.mark.parametrize(
    "row, message",
    [
        ({"question": "Q", "id": 1}, r"data.jsonl:2: field 'answer' or 'final_answer' missing \(fields present: question, id\)"),
        ({"answer": "1"}, r"data.jsonl:2: field 'question' or 'problem' missing \(fields present: answer\)"),
        ("{not json", r"data.jsonl:2: invalid JSON"),
        ([1, 2], r"data.jsonl:2: expected a JSON object, got list"),
        ({"question": "  ", "answer": "1"}, r"data.jsonl:2: field 'question' must be a non-empty string"),
        ({"question": "Q", "answer": [1]}, r"data.jsonl:2: field 'answer' must be a string or number, got list"),
        ({"question": "Q", "answer": "1", "id": "a"}, r"data.jsonl:2: duplicate id 'a' \(first on line 1\)"),
    ],
)
def test_malformed_line_names_file_line_and_field(tmp_path, row, message):
    path = write_jsonl(tmp_path / "data.jsonl", [{"question": "ok", "answer": "1", "id": "a"}, row])
    with pytest.raises(ProblemFileError, match=message):
        load_problems(path)


def test_explicit_field_missing(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [{"question": "Q", "id": "x"}])
    with pytest.raises(ProblemFileError, match=r"data.jsonl:1: field 'answer' missing \(fields present: question, id\)"):
        load_problems(path, answer_field="answer")


def test_gsm8k_format_requires_hashes(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "Q", "answer": "no final line"}])
    with pytest.raises(ProblemFileError, match="g.jsonl:1: field 'answer' has no '#### answer' line"):
        load_problems(path, answer_format="gsm8k")


def test_empty_answers_are_skipped(tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [{"question": "Q", "answer": ""}, {"question": "R", "answer": "3"}])
    assert [p.answer for p in load_problems(path)] == ["3"]


def test_problem_hashes_by_id():
    a = Problem("x", "Q", "1", {"k": [1]})
    assert hash(a) == hash(Problem("x", "other", "2")) and len({a, a}) == 1


def test_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("EVOMATH_DATA_DIR", raising=False)
    assert (shared_data_dir() / "math500" / "test.jsonl").is_file()
    (tmp_path / "aime24").mkdir()
    write_jsonl(tmp_path / "aime24" / "test.jsonl", [{"id": 1, "problem": "P", "answer": "001"}])
    monkeypatch.setenv("EVOMATH_DATA_DIR", str(tmp_path))
    assert [p.answer for p in load_benchmark("aime24")] == ["001"]
    monkeypatch.setenv("EVOMATH_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="EVOMATH_DATA_DIR"):
        load_benchmark("math500")
    assert load_benchmark("aime24", data_dir=tmp_path)[0].id == "aime24-1"  # data_dir wins


def test_missing_data_says_how_to_set_it(monkeypatch, tmp_path):
    import evomath.problems as problems

    monkeypatch.delenv("EVOMATH_DATA_DIR", raising=False)
    monkeypatch.setattr(problems, "__file__", str(tmp_path / "repo" / "evomath" / "problems.py"))
    with pytest.raises(FileNotFoundError, match="set EVOMATH_DATA_DIR"):
        shared_data_dir()


def test_hf_loader(monkeypatch):
    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return [{"question": "Q1", "answer": "x\n#### 1,000"}, {"question": "Q2", "answer": "y\n#### 7"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    problems = load_benchmark("hf:openai/gsm8k/main:train", limit=1, seed=0)
    assert calls == [("openai/gsm8k", "main", "train")]
    assert len(problems) == 1 and problems[0].answer in ("1000", "7") and problems[0].id.startswith("gsm8k-")
    load_benchmark("hf:HuggingFaceH4/MATH-500")
    assert calls[-1] == ("HuggingFaceH4/MATH-500", None, "test")
    with pytest.raises(ValueError, match="hf:owner/name"):
        load_benchmark("hf:nobody")
