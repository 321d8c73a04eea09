"""The commands that generate build their one engine in-process on a CPU, as the stages do (on 2
cores vLLM's separate engine-core process halves the tokens/s, benchmarks/engine_processes.py)."""

from __future__ import annotations

import pytest

import evomath.backends as backends
from deployments.cli import main


class _Built(Exception):
    """Raised by the fake engine factory, so a command stops once it has asked for its engine."""


@pytest.fixture
def asked(monkeypatch):
    calls: list[dict] = []

    def fake_make_backend(model, engine_config=None, in_process=None):
        calls.append({"model": model, "in_process": in_process})
        raise _Built

    monkeypatch.setattr(backends, "make_backend", fake_make_backend)
    return calls


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "What is 2 + 3?"],
        ["search", "--method", "greedy", "--problems", "demo_test", "--limit", "2", "--out", "{tmp}"],
        ["evaluate", "--benchmark", "demo_test", "--limit", "2", "--methods", "greedy", "--out", "{tmp}"],
    ],
    ids=lambda argv: argv[0],
)
def test_generating_commands_ask_for_an_in_process_engine(argv, asked, tmp_path):
    with pytest.raises(_Built):
        main([arg.replace("{tmp}", str(tmp_path)) for arg in argv])
    assert [call["in_process"] for call in asked] == [True]
