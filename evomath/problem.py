"""One problem with its ground-truth answer: what every benchmark, user file and generator yields."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    id: str
    question: str = field(hash=False)
    answer: str = field(hash=False)  # normalised gold final answer (GSM8K "#### 1,234" -> "1234")
    meta: dict = field(default_factory=dict, hash=False, compare=False)
