"""What every search method shares.

Two halves: `Expander` turns the sampled steps that came back together into tree nodes that are
executed, graded and scored in one pass each (one round of sandbox jobs, one ``grade_many``, one
value-function call); `Driver` keeps up to ``concurrent_problems`` problems in flight and feeds
their expansions to the engine's stream (``feed``: continuously, or in lock-step waves), so the
engine's batch is as full as the methods allow, and hands each finished tree to ``on_tree_done``
at once.

A method is a `SearchState` per problem: ``pending()`` names the leaves to expand next,
``absorb()`` reads their new children and decides what comes after.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from evomath.arithmetic import derivation_error
from evomath.backends.base import Completion, GenerationRequest, GenerationResult, open_stream
from evomath.config import SearchConfig
from evomath.tree import Node, Tree

if TYPE_CHECKING:
    from evomath.formats import ParsedStep, StepFormat
    from evomath.problems import Problem

ValueFn = Callable[[Sequence[tuple[str, Sequence[str]]]], list[float]]
TreeCallback = Callable[[Tree], None]

# Value of a terminal that carries no answer (too deep, code errors, no parsable step). As in
# rStar it is recorded on the node only: such a candidate is dropped, not a trajectory outcome.
DEAD_END = -1.0


@dataclass
class SearchEnv:
    """What a search needs beside its problems: the policy's engine, the step format, the settings,
    the sandbox (None for steps without code), the grader, and optionally a value function (a PPM)."""

    backend: Any
    fmt: StepFormat
    config: SearchConfig
    sandbox: Any = None
    grader: Any = None
    value_fn: ValueFn | None = None

    def with_config(self, **updates) -> SearchEnv:
        """The same environment with some search settings changed (a seed, a beam width)."""
        return replace(self, config=self.config.model_copy(update=updates))


@dataclass
class SearchStats:
    problems: int = 0
    rollouts: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    seconds: float = 0.0
    requests: int = 0
    batches: int = 0
    # Where ``seconds`` went (the rest is the search's own bookkeeping): inside the engine's
    # generate, waiting for the sandbox beyond the grading it overlaps, grading, value scoring.
    generate_seconds: float = 0.0
    code_seconds: float = 0.0
    grading_seconds: float = 0.0
    scoring_seconds: float = 0.0

    def add(self, other: SearchStats) -> None:
        """Count another search's work in (several searches of one stage)."""
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def time_split(self) -> dict[str, float]:
        """Seconds per part of the search, for a stage's metrics."""
        return {"seconds_generate": self.generate_seconds, "seconds_code": self.code_seconds,
                "seconds_grading": self.grading_seconds, "seconds_scoring": self.scoring_seconds}

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens_per_second": self.tokens_per_second}


def normalise_priors(children: Sequence[Node]) -> None:
    """Siblings' mean log-probabilities (``policy_prior``, where the engine returned them) as a
    probability distribution over them (a softmax): AlphaMath's PUCT prior P."""
    scored = [c for c in children if c.policy_prior is not None]
    if not scored:
        return
    top = max(c.policy_prior for c in scored)
    weights = [math.exp(c.policy_prior - top) for c in scored]
    total = sum(weights)
    for child, weight in zip(scored, weights):
        child.policy_prior = weight / total


def derive_seed(*parts: object) -> int:
    """A stable per-request seed (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (2**31 - 1)


def normalise(text: str) -> str:
    """Candidates equal up to whitespace are duplicates."""
    return " ".join(text.split())


@dataclass(eq=False)
class Expansion:
    """A request to sample ``n`` next steps below ``leaf``; the engine fills in the results."""

    leaf: Node
    n: int
    seed: int | None
    key: Any = None  # the method's handle (a rollout, a chain)
    dedupe: bool = True
    # The rest of the solution in one request, split into steps afterwards, where the format runs no
    # code between steps (Expander.steps_per_request); else one step.
    whole: bool = False
    children: list[Node] = field(default_factory=list)
    tokens: int = 0
    prompt_tokens: int = 0


class SearchState:
    """One problem's search. ``pending`` returns [] exactly when the search is finished, or (an
    ``independent`` search) when all it can expand is on the engine.

    ``independent``: its expansions need not come back together (separate chains, not one MCTS
    selection): the Driver hands each one to ``absorb`` as soon as it is back and asks ``pending``
    again at once, so one slow sequence holds up only its own chain, not its tree's others."""

    independent = False

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.rollouts = 0  # trajectories finished in this run
        self.tokens = 0
        self.prompt_tokens = 0
        self.seconds = 0.0

    def pending(self, fill: int) -> list[Expansion]:
        """Leaves to expand now; ``fill`` is how many the batch has room for from this tree."""
        raise NotImplementedError

    def absorb(self, expansions: list[Expansion]) -> None:
        raise NotImplementedError


def new_tree(problem: Problem) -> Tree:
    return Tree(problem.id, problem.question, problem.answer)


@dataclass(eq=False)
class _Child:
    tree: Tree
    node: Node
    parsed: ParsedStep | None


class Expander:
    """Sample, execute, grade and score one batch of expansions.

    ``reward``: "gold" backs up +1/-1 from grading (data generation); "value" backs up the value
    function's score of the answer, graded only for the record (evaluation must not see gold).
    """

    def __init__(
        self,
        env: SearchEnv,
        *,
        temperature: float | None = None,
        score_steps: bool = False,
        score_answers: bool = False,
        reward: str = "gold",
    ) -> None:
        if reward not in ("gold", "value"):
            raise ValueError(f"reward must be 'gold' or 'value', not {reward!r}")
        if (score_steps or score_answers or reward == "value") and env.value_fn is None:
            raise ValueError("scoring nodes needs a value_fn")
        self.backend, self.fmt, self.config = env.backend, env.fmt, env.config
        self.sandbox, self.grader, self.value_fn = env.sandbox, env.grader, env.value_fn
        self.temperature = env.config.temperature if temperature is None else temperature
        self.score_steps = score_steps
        self.score_answers = score_answers or reward == "value"
        self.reward = reward

    def requests(self, work: Sequence[tuple[Tree, Expansion]]) -> list[GenerationRequest]:
        return [self._request(tree, exp) for tree, exp in work]

    def absorb(self, work: Sequence[tuple[Tree, Expansion]], results: Sequence[GenerationResult],
               stats: SearchStats) -> None:
        """Turn the sampled steps of ``work`` into nodes: executed, graded and scored in one pass each."""
        new: list[_Child] = []
        for (tree, exp), result in zip(work, results, strict=True):
            exp.tokens = sum(c.num_tokens for c in result.completions)
            exp.prompt_tokens = result.prompt_tokens
            stats.generated_tokens += exp.tokens
            stats.prompt_tokens += exp.prompt_tokens
            new += self._add_children(tree, exp, result)
        jobs = self._submit_code(new)  # runs in the sandbox pool while answers are graded
        for child in new:
            self._mark_parsed_terminal(child)
        began = time.perf_counter()
        self._grade([c for c in new if c.node.terminal == "answer"])
        graded = time.perf_counter()
        self._apply_code(jobs)
        self._check_arithmetic(new)
        coded = time.perf_counter()
        for child in new:
            self._mark_limits(child)
        self._score(new)
        stats.grading_seconds += graded - began
        stats.code_seconds += coded - graded
        stats.scoring_seconds += time.perf_counter() - coded
        for child in new:
            self._record_value(child)

    def _forced_answer(self, exp: Expansion) -> str:
        """The text that opens the last step the depth limit allows, when answers are forced there:
        a chain cut off without an answer teaches nothing, one made to conclude can be graded."""
        prefix = getattr(self.fmt, "answer_prefix", None)
        if self.config.force_final_answer and prefix and exp.leaf.depth + 1 >= self.config.max_depth:
            return prefix
        return ""

    def steps_per_request(self, exp: Expansion) -> int:
        """How many steps ``exp``'s one request writes. Several only for a format whose steps run no
        code (``steps_in_one_request``): the request then decodes past the step markers, as
        Math-Shepherd's completer decodes a continuation to its end, and its text is split into
        steps afterwards, up to the depth limit less a forced last step (that one stays a request
        of its own, opened with the answer). Each step is then a paragraph of any length; the
        request's budget is ``max_step_tokens`` per step."""
        if not exp.whole or not getattr(self.fmt, "steps_in_one_request", False):
            return 1
        forced = 1 if self.config.force_final_answer and getattr(self.fmt, "answer_prefix", None) else 0
        return max(1, self.config.max_depth - exp.leaf.depth - forced)

    def _request(self, tree: Tree, exp: Expansion) -> GenerationRequest:
        steps = self.steps_per_request(exp)
        return GenerationRequest(
            prompt=self.fmt.continuation(tree.question, tree.steps_text(exp.leaf)) + self._forced_answer(exp),
            n=exp.n,
            temperature=self.temperature,
            top_p=self.config.top_p,
            max_tokens=self.config.max_step_tokens * steps,
            stop=tuple(self.fmt.stop) if steps == 1 else (),
            seed=exp.seed,
            logprobs=self.config.selection == "puct",
        )

    def _add_children(self, tree: Tree, exp: Expansion, result: GenerationResult) -> list[_Child]:
        """One child per distinct candidate; an empty result still yields a dead-end child, a prompt
        beyond the context a ``length`` one."""
        if result.prompt_too_long:
            node = tree.add_child(exp.leaf, "", terminal="length")
            exp.children.append(node)
            return [_Child(tree, node, None)]
        seen: set[tuple[bool, str]] = set()
        out = []
        forced = self._forced_answer(exp)
        steps = self.steps_per_request(exp)
        for completion in result.completions or [Completion("", 0, "length")]:
            text = forced + completion.text
            pieces = self._pieces(text, completion, steps)
            parsed = [self.fmt.parse_step(piece, finish) for piece, finish, _ in pieces]
            first = parsed[0]
            key = (first is None, normalise(first.text if first and steps == 1 else text))
            if exp.dedupe and key in seen:
                continue
            seen.add(key)
            chain = self._add_chain(tree, exp.leaf, pieces, parsed)
            chain[0].node.policy_prior = completion.logprob / max(completion.num_tokens, 1) \
                if completion.logprob is not None else None  # a mean log-probability until normalised below
            exp.children.append(chain[0].node)
            out += chain
        normalise_priors(exp.children)
        return out

    def _pieces(self, text: str, completion: Completion, steps: int) -> list[tuple[str, str, int]]:
        """(text, finish reason, tokens) of each step in one completion: itself for a one-step
        request; else its text split at the step markers, the first ``steps`` pieces, the last
        piece of the text finishing as the request did, the tokens shared out by characters."""
        if steps == 1:
            return [(text, completion.finish_reason, completion.num_tokens)]
        split = self.fmt.split(text) or [text]
        kept = split[:steps]
        finishes = ["stop"] * (len(kept) - 1) + [completion.finish_reason if len(kept) == len(split) else "stop"]
        total = sum(map(len, kept)) or 1
        tokens = [completion.num_tokens * len(piece) // total for piece in kept]
        tokens[-1] += completion.num_tokens - sum(tokens)
        return list(zip(kept, finishes, tokens))

    @staticmethod
    def _add_chain(tree: Tree, leaf: Node, pieces: list[tuple[str, str, int]],
                   parsed: list[ParsedStep | None]) -> list[_Child]:
        """One node per piece, each below the one before, ending at the first final or empty step."""
        chain: list[_Child] = []
        parent = leaf
        for (text, _, tokens), step in zip(pieces, parsed):
            node = tree.add_child(parent, step.text if step else text, num_tokens=tokens)
            chain.append(_Child(tree, node, step))
            if step is None or step.is_final:
                break
            parent = node
        return chain

    def _submit_code(self, new: list[_Child]) -> list[tuple[_Child, Any]]:
        """Run the whole program so far for every step that adds code or asks for output."""
        futures: dict[str, Any] = {}
        jobs = []
        for child in new:
            parsed = child.parsed
            if parsed is None or not (parsed.code or parsed.ends_code):
                continue
            program = self.fmt.program(child.tree.steps_text(child.node))
            if program not in futures:
                futures[program] = self.sandbox.submit(program)
            jobs.append((child, futures[program]))
        return jobs

    def _apply_code(self, jobs: list[tuple[_Child, Any]]) -> None:
        for child, future in jobs:
            result = future.result()
            node, parent = child.node, child.tree.nodes[child.node.parent]
            node.code_output = result.output
            if not result.ok:
                node.code_error = True
                node.consecutive_errors = parent.consecutive_errors + 1
            if child.parsed.ends_code:
                node.text = self.fmt.with_output(node.text, result.output)

    def _check_arithmetic(self, new: list[_Child]) -> None:
        """``check_arithmetic``: a natural step whose arithmetic is not derived is a failing step,
        the way a step whose code fails is one (evomath.arithmetic); the earlier steps are judged
        when they were new."""
        if not self.config.check_arithmetic:  # the config allows it with natural steps only
            return
        for child in new:
            if child.parsed is None:
                continue
            tree, node = child.tree, child.node
            if derivation_error(tree.question, tree.steps_text(node)) is not None:
                node.code_error = True
                node.consecutive_errors = tree.nodes[node.parent].consecutive_errors + 1

    @staticmethod
    def _mark_parsed_terminal(child: _Child) -> None:
        if child.node.is_terminal:
            return
        if child.parsed is None:
            child.node.terminal = "no_step"
        elif child.parsed.is_final:
            child.node.terminal = "answer"
            child.node.answer = child.parsed.answer

    def _mark_limits(self, child: _Child) -> None:
        node = child.node
        if node.is_terminal:
            return
        if node.consecutive_errors >= self.config.max_code_errors:
            node.terminal = "code_errors"
        elif node.depth >= self.config.max_depth:
            node.terminal = "too_deep"

    def _grade(self, answers: list[_Child]) -> None:
        gradable = [c for c in answers if c.node.answer is not None]
        verdicts = self.grader.grade_many([(c.node.answer, c.tree.gold) for c in gradable]) if gradable else []
        for child in answers:
            child.node.correct = False
        for child, ok in zip(gradable, verdicts):
            child.node.correct = bool(ok)

    def _score(self, new: list[_Child]) -> None:
        """Set ``prior`` from the value function, in one call for the whole batch."""
        todo = [
            c
            for c in new
            if (self.score_steps and not c.node.is_terminal)
            or (self.score_answers and c.node.terminal == "answer")
        ]
        if not todo:
            return
        scores = self.value_fn([(c.tree.question, c.tree.steps_text(c.node)) for c in todo])
        if len(scores) != len(todo):
            raise ValueError(f"value_fn returned {len(scores)} scores for {len(todo)} items")
        for child, score in zip(todo, scores):
            child.node.prior = float(score)

    def _record_value(self, child: _Child) -> None:
        """Answers back their value up to the root; other terminals keep -1 to themselves. A right
        answer reached through failing code backs up -1 (``Tree.is_success``): rStar, whose
        threshold can leave a failing step alive, would back +1 up through the broken step."""
        node = child.node
        if node.terminal == "answer":
            if self.reward == "value":
                value = node.prior
            else:
                value = 1.0 if child.tree.is_success(node) else -1.0
            child.tree.backup(node, value)
        elif node.is_terminal:
            node.visits, node.value_sum = 1, DEAD_END
        elif self.config.value_backup and node.prior is not None:
            # AlphaMath: the new step's value is a leaf evaluation; its ancestors take it in (the step
            # counts it as its prior already)
            child.tree.backup(child.tree.nodes[node.parent], node.prior)


@dataclass(eq=False)
class _InFlight:
    """A tree's expansions on the engine, and the results that are back."""

    expansions: list[Expansion]
    results: list[GenerationResult | None]

    @property
    def complete(self) -> bool:
        return all(r is not None for r in self.results)


class Driver:
    """Keep ``concurrent_problems`` searches in flight and feed all their expansions to the engine.

    ``feed: continuous`` (the default): a tree's next expansions go to the engine as soon as its last
    ones are back, while other trees' steps are still decoding, so the engine's batch never drains
    to its longest sequence (and an ``independent`` search's next expansion of a chain goes as soon as
    that chain's last one is back); ``feed: waves``: every tree waits for the whole batch (one
    ``generate`` per step of all trees, rStar's lock-step). Each request is seeded, so both sample
    the same steps up to the numerics of other batch compositions.
    """

    def __init__(
        self,
        expander: Expander,
        config: SearchConfig,
        method: str,
        on_tree_done: TreeCallback | None = None,
        progress: bool = True,
    ) -> None:
        self.expander, self.config, self.method = expander, config, method
        self.on_tree_done, self.progress = on_tree_done, progress

    def run(
        self, problems: Sequence[Problem], start: Callable[[Problem], SearchState]
    ) -> tuple[list[Tree], SearchStats]:
        stats = SearchStats()
        began = time.perf_counter()
        queue = deque(enumerate(problems))
        active: dict[int, SearchState] = {}
        trees: list[Tree | None] = [None] * len(problems)
        stream = open_stream(self.expander.backend, self.config.feed)
        flight: dict[int, list[_InFlight]] = {}  # tree index -> its batches on the engine
        owner: dict[int, tuple[int, _InFlight, int]] = {}  # ticket -> (tree index, its batch, position in it)
        asking: set[int] = set()  # trees to ask for their next expansions
        slots = max(1, self.config.concurrent_problems)
        with tqdm(total=len(problems), desc=self.method, unit="problem", disable=not self.progress) as bar, \
                closing(stream):
            while queue or active:
                while True:  # every search that may expand submits; a finished one frees its slot at once
                    while queue and len(active) < slots:
                        index, problem = queue.popleft()
                        active[index] = start(problem)
                        flight[index] = []
                        asking.add(index)
                    if not asking:
                        break
                    fill = 1 if queue else max(1, slots // len(active))
                    for index in sorted(asking):
                        asking.discard(index)
                        state = active[index]
                        expansions = state.pending(fill)
                        if not expansions:
                            if not flight[index]:
                                del flight[index]
                                trees[index] = self._finish(active.pop(index), stats)
                                bar.update(1)
                            continue
                        batches = [[e] for e in expansions] if state.independent else [expansions]
                        for batch in batches:
                            tickets = stream.submit(self.expander.requests([(state.tree, e) for e in batch]))
                            entry = _InFlight(batch, [None] * len(batch))
                            owner.update({t: (index, entry, k) for k, t in enumerate(tickets)})
                            flight[index].append(entry)
                        stats.requests += len(expansions)
                if owner:
                    asking = self._step(active, flight, owner, stream, stats)
                    bar.set_postfix(tok_s=f"{stats.generated_tokens / (time.perf_counter() - began):.0f}")
        stats.seconds = time.perf_counter() - began
        return trees, stats

    def _step(self, active: dict[int, SearchState], flight: dict[int, list[_InFlight]],
              owner: dict[int, tuple[int, _InFlight, int]], stream, stats: SearchStats) -> set[int]:
        """Wait for the engine to finish some requests; the batches that are all back are absorbed
        (all trees' together: one grading and scoring pass). Returns the trees that absorbed one."""
        t0 = time.perf_counter()
        finished = stream.poll()
        stats.generate_seconds += time.perf_counter() - t0
        stats.batches += 1
        for ticket, result in finished:
            _, entry, position = owner.pop(ticket)
            entry.results[position] = result
        ready = [(i, entry) for i, entries in flight.items() for entry in entries if entry.complete]
        self.expander.absorb([(active[i].tree, e) for i, entry in ready for e in entry.expansions],
                             [r for _, entry in ready for r in entry.results], stats)
        waiting = [i for i, entries in flight.items() if entries]
        share = (time.perf_counter() - t0) / len(waiting)  # the wall time, split over the trees waiting
        for index in waiting:
            active[index].seconds += share
        for index, entry in ready:
            state = active[index]
            flight[index].remove(entry)
            state.tokens += sum(e.tokens for e in entry.expansions)
            state.prompt_tokens += sum(e.prompt_tokens for e in entry.expansions)
            state.absorb(entry.expansions)
        return {index for index, _ in ready}

    def _finish(self, state: SearchState, stats: SearchStats) -> Tree:
        tree, meta = state.tree, state.tree.meta
        meta["method"] = self.method
        meta["reward"] = self.expander.reward  # "gold": its values know the answer (never re-select from it)
        meta["step_format"] = self.expander.fmt.name
        meta["seed"] = self.config.seed
        meta["seeds"] = [*meta.get("seeds", []), self.config.seed]
        meta["rollouts"] = meta.get("rollouts", 0) + state.rollouts
        meta["tokens"] = meta.get("tokens", 0) + state.tokens
        meta["prompt_tokens"] = meta.get("prompt_tokens", 0) + state.prompt_tokens
        meta["seconds"] = round(meta.get("seconds", 0.0) + state.seconds, 3)
        stats.problems += 1
        stats.rollouts += state.rollouts
        if self.on_tree_done is not None:
            self.on_tree_done(tree)
        return tree
