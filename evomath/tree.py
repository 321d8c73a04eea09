"""Search trees: one node per reasoning step, serialised losslessly to JSONL.

Trees are the system's main artifact: buckets, SFT data and PPM pairs are all derived from them,
so everything a later stage needs (visits, values, PPM scores, terminal kind, grading) is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from evomath.files import append_jsonl, read_jsonl, write_jsonl

# "length": the prompt (question + steps so far) no longer fits the model's context.
TERMINAL_KINDS = ("answer", "too_deep", "code_errors", "no_step", "length")


@dataclass
class Node:
    id: int
    parent: int | None
    text: str  # the step as the model wrote it (empty for the root)
    depth: int
    visits: int = 0
    value_sum: float = 0.0
    # A value function's score for the partial trajectory ending here (the PPM from round 3):
    # it counts as the node's first value.
    prior: float | None = None
    # The policy's probability of this step among its siblings (AlphaMath's PUCT prior).
    policy_prior: float | None = None
    terminal: str | None = None  # one of TERMINAL_KINDS
    answer: str | None = None
    correct: bool | None = None
    code_output: str | None = None
    code_error: bool = False
    consecutive_errors: int = 0
    num_tokens: int = 0
    children: list[int] = field(default_factory=list)

    @property
    def q(self) -> float:
        """Mean of the values backed up through this node, the prior counted as one of them."""
        total, count = self.value_sum, self.visits
        if self.prior is not None:
            total, count = total + self.prior, count + 1
        return total / count if count else 0.0

    @property
    def is_terminal(self) -> bool:
        return self.terminal is not None


@dataclass
class Tree:
    problem_id: str
    question: str
    gold: str
    nodes: list[Node] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes.append(Node(id=0, parent=None, text="", depth=0))

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def add_child(self, parent: Node, text: str, **fields) -> Node:
        node = Node(id=len(self.nodes), parent=parent.id, text=text, depth=parent.depth + 1, **fields)
        self.nodes.append(node)
        parent.children.append(node.id)
        return node

    def children(self, node: Node) -> list[Node]:
        return [self.nodes[i] for i in node.children]

    def ancestors(self, node: Node) -> Iterator[Node]:
        """``node``, its parent, ... up to the root (the one walk up every other one uses)."""
        current: Node | None = node
        while current is not None:
            yield current
            current = self.nodes[current.parent] if current.parent is not None else None

    def path(self, node: Node) -> list[Node]:
        """Steps from the first one down to ``node`` (the root excluded)."""
        return [n for n in self.ancestors(node) if n.parent is not None][::-1]

    def steps_text(self, node: Node) -> list[str]:
        return [n.text for n in self.path(node)]

    def backup(self, node: Node, value: float) -> None:
        """Add ``value`` to every node from ``node`` up to the root."""
        for current in self.ancestors(node):
            current.visits += 1
            current.value_sum += value

    def terminals(self) -> list[Node]:
        return [n for n in self.nodes if n.is_terminal]

    def answered(self) -> list[Node]:
        return [n for n in self.nodes if n.terminal == "answer"]

    def has_failing_code(self, node: Node) -> bool:
        """Did some step from the first one down to ``node`` run code that failed?"""
        return any(n.code_error for n in self.path(node))

    def is_success(self, node: Node) -> bool:
        """A correct answer reached without failing code: the only outcome that counts as a positive
        (its +1 backed up, SFT data, the chosen side of a PPM pair, a solved problem). An answer
        after a traceback may be right by luck; rStar ends a branch at its error threshold, and with
        a threshold above 1 the broken step must still not be rewarded."""
        return node.terminal == "answer" and bool(node.correct) and not self.has_failing_code(node)

    def is_wrong_answer(self, node: Node) -> bool:
        """A graded answer that is wrong: what PPM negatives must lead to (rStar). Dead ends (too
        deep, code errors, no step, prompt too long) and answer-less endings are not wrong answers."""
        return node.terminal == "answer" and node.answer is not None and node.correct is False

    def leads_to_correct(self) -> dict[int, bool]:
        """For each node: is some success (``is_success``) at or below it?"""
        return self.leads_to(self.is_success)

    def leads_to_wrong_answer(self) -> dict[int, bool]:
        """For each node: is some wrong answer (``is_wrong_answer``) at or below it?"""
        return self.leads_to(self.is_wrong_answer)

    def leads_to(self, outcome: Callable[[Node], bool]) -> dict[int, bool]:
        """For each node: is some node with ``outcome`` at or below it?"""
        found = {n.id: False for n in self.nodes}
        for leaf in self.nodes:
            if outcome(leaf):
                for node in self.ancestors(leaf):
                    if found[node.id]:
                        break  # the rest of the way up is marked already
                    found[node.id] = True
        return found

    def to_dict(self) -> dict:
        return {
            "problem_id": self.problem_id,
            "question": self.question,
            "gold": self.gold,
            "meta": self.meta,
            "nodes": [asdict(n) for n in self.nodes],
        }

    @classmethod
    def from_dict(cls, raw: dict) -> Tree:
        nodes = [Node(**n) for n in raw["nodes"]]
        return cls(raw["problem_id"], raw["question"], raw["gold"], nodes=nodes, meta=raw.get("meta", {}))


def write_trees(path: str | Path, trees: Iterable[Tree]) -> None:
    """Write atomically: a reader never sees a half-written file."""
    write_jsonl(path, (t.to_dict() for t in trees))


def append_trees(path: str | Path, trees: Iterable[Tree]) -> None:
    """Append finished trees (one line each, fsynced) so an interrupted search keeps what it finished."""
    append_jsonl(path, (t.to_dict() for t in trees))


def read_trees(path: str | Path) -> Iterator[Tree]:
    for raw in read_jsonl(path):
        yield Tree.from_dict(raw)
