"""Fakes shared by the search tests: one line per step, \\boxed{} ends a chain. test_mcts.py
uses Step and Problem and keeps its own format, which also scripts code steps."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass
class Step:
    text: str
    code: str | None = None
    ends_code: bool = False
    is_final: bool = False
    answer: str | None = None


@dataclass
class Problem:
    id: str
    question: str
    answer: str


class FakeFormat:
    name = "fake"
    stop = ("\n",)

    def continuation(self, question, steps):
        return f"Q: {question}\n" + "".join(s + "\n" for s in steps)

    def parse_step(self, text, finish_reason):
        if not text.strip():
            return None
        boxed = re.search(r"\\boxed\{([^}]*)\}", text)
        return Step(text, is_final=boxed is not None, answer=boxed.group(1) if boxed else None)


class SplittingFormat(FakeFormat):
    """One line per step, and no code between steps: a request may write several lines."""

    steps_in_one_request = True
    answer_prefix = "\\boxed{"

    def split(self, text):
        return [line for line in text.split("\n") if line]  # as the fake engine returns steps: without the stop
