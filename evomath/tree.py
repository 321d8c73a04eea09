"""Search trees: one node per reasoning step, serialised losslessly to JSONL.

Trees are the system's main artifact: buckets, SFT data and PPM pairs are all derived from them,
so everything a later stage needs (visits, values, PPM scores, terminal kind, grading) is stored.
A tree read from a file is checked against one schema (``TreeLine``: every field's type, no unknown
key) and for its shape (ids are positions, one root at 0, parents and children agree, no parent
cycle); anything else raises ``ArtifactError`` naming the file, the line and the field.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config
from typing_extensions import NotRequired, TypedDict

from evomath.files import ArtifactError, append_jsonl, jsonl_lines, write_jsonl

# "length": the prompt (question + steps so far) no longer fits the model's context.
TERMINAL_KINDS = ("answer", "too_deep", "code_errors", "no_step", "length")


# How a node is checked when read: exact JSON types (no "3" for 3), no unknown key. Fields with a
# default may be absent (trees written before the field existed).
@with_config(ConfigDict(strict=True, extra="forbid"))
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
        current = node
        for _ in self.nodes:  # a way up visits each node at most once
            yield current
            if current.parent is None:
                return
            current = self.nodes[current.parent]
        raise ValueError(f"tree {self.problem_id}: node {node.id}'s parents never reach the root (a parent cycle)")

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
    def from_dict(cls, raw: dict, where: str = "tree") -> Tree:
        """A tree from ``to_dict``'s form, checked as a file's line is."""
        return cls.from_json(json.dumps(raw), where)

    @classmethod
    def from_json(cls, text: str, where: str) -> Tree:
        """Parse and check one line of a trees file; ``where`` (``FILE:LINE``) starts every error."""
        try:
            raw = _tree_line().validate_json(text)
        except ValidationError as err:
            raise ArtifactError(f"{where}: {_first_problem(err)}") from None
        check_shape(raw["nodes"], where)
        return cls(raw["problem_id"], raw["question"], raw["gold"], nodes=raw["nodes"], meta=raw.get("meta", {}))


class TreeLine(TypedDict):
    """One line of a trees file, as ``Tree.to_dict`` writes it."""

    __pydantic_config__ = ConfigDict(strict=True, extra="forbid")
    problem_id: str
    question: str
    gold: str
    nodes: list[Node]
    meta: NotRequired[dict]


@functools.cache
def _tree_line() -> TypeAdapter:
    return TypeAdapter(TreeLine)


def _first_problem(err: ValidationError) -> str:
    """Pydantic's first error as ``nodes[2].visits: Input should be a valid integer (got "3")``."""
    first = err.errors(include_url=False)[0]
    field_name = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
    if first["type"] == "json_invalid":
        return f"not valid JSON ({first['msg'].removeprefix('Invalid JSON: ')})"
    message = {"missing": "missing", "extra_forbidden": "unknown field",
               "unexpected_keyword_argument": "unknown field"}.get(first["type"])
    if message is None:
        shown = json.dumps(first["input"], default=str)
        message = f"{first['msg']} (got {shown if len(shown) <= 40 else shown[:37] + '...'})"
    return f"{field_name}: {message}" if field_name else message


def check_shape(nodes: list[Node], where: str) -> None:
    """What types cannot say: node ``i`` has id ``i``, the root (and only it) sits at 0 without a
    parent, every parent is another node in range that lists the node among its children and every
    listed child names its parent back, once, and every node's parents lead to the root. O(nodes)."""
    if not nodes:
        raise ArtifactError(f"{where}: nodes: empty (a tree holds at least its root)")
    count = len(nodes)
    for i, node in enumerate(nodes):
        if node.id != i:
            raise ArtifactError(f"{where}: nodes[{i}].id: {node.id} is not the node's position {i}")
        _check_parent(nodes, i, where)
    for i, node in enumerate(nodes):
        for child in node.children:
            if not 0 <= child < count:
                raise ArtifactError(f"{where}: nodes[{i}].children: {child} is out of range ({count} nodes)")
            if nodes[child].parent != i:
                raise ArtifactError(f"{where}: nodes[{i}].children: {child}'s parent is {nodes[child].parent}, not {i}")
    if sum(len(node.children) for node in nodes) != count - 1:
        raise ArtifactError(f"{where}: nodes: a child is listed more than once in its parent's children")
    _check_no_cycle(nodes, where)


def _check_parent(nodes: list[Node], i: int, where: str) -> None:
    parent = nodes[i].parent
    if i == 0:
        if parent is not None:
            raise ArtifactError(f"{where}: nodes[0].parent: {parent}, but the root has none")
        return
    if parent is None:
        raise ArtifactError(f"{where}: nodes[{i}].parent: null, but only the root (nodes[0]) has no parent")
    if parent == i:
        raise ArtifactError(f"{where}: nodes[{i}].parent: {i} is the node itself (a cycle)")
    if not 0 <= parent < len(nodes):
        raise ArtifactError(f"{where}: nodes[{i}].parent: {parent} is out of range ({len(nodes)} nodes)")
    if i not in nodes[parent].children:
        raise ArtifactError(f"{where}: nodes[{i}].parent: {parent} does not list {i} among its children")


def _check_no_cycle(nodes: list[Node], where: str) -> None:
    """Every walk up reaches the root; each node is walked once (those known to reach it stop a walk)."""
    reaches_root = {0}
    for start in range(len(nodes)):
        walk: dict[int, None] = {}  # the nodes walked through, in order
        current = start
        while current not in reaches_root:
            if current in walk:
                loop = list(walk)[list(walk).index(current):] + [current]
                raise ArtifactError(f"{where}: nodes[{current}].parent: a cycle ({' -> '.join(map(str, loop))}) "
                                    "that never reaches the root")
            walk[current] = None
            current = nodes[current].parent
        reaches_root.update(walk)


def write_trees(path: str | Path, trees: Iterable[Tree]) -> None:
    """Write atomically: a reader never sees a half-written file."""
    write_jsonl(path, (t.to_dict() for t in trees))


def append_trees(path: str | Path, trees: Iterable[Tree]) -> None:
    """Append finished trees (one line each, fsynced) so an interrupted search keeps what it finished."""
    append_jsonl(path, (t.to_dict() for t in trees))


def read_trees(path: str | Path, *, tolerate_torn_tail: bool = False) -> Iterator[Tree]:
    """Each line checked (``Tree.from_json``); ``tolerate_torn_tail`` only for a search resuming its file."""
    for where, text in jsonl_lines(path, tolerate_torn_tail=tolerate_torn_tail):
        yield Tree.from_json(text, where)
