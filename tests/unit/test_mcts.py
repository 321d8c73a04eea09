"""MCTS on a scripted policy: selection, backups, terminals, budgets, batching, resuming."""

from __future__ import annotations

import math
import re
from concurrent.futures import Future
from dataclasses import dataclass

import pytest
from search_fakes import Problem, Step

from evomath.backends.base import Completion, GenerationResult
from evomath.config import SearchConfig
from evomath.search import SearchEnv, SearchStats, mcts, run_search
from evomath.search.engine import derive_seed
from evomath.search.mcts import TreeSearch, uct
from evomath.tree import Node, Tree, append_trees, read_trees


# --- fakes -------------------------------------------------------------------------------------
class FakeFormat:
    """One line per step; '??' or empty = unparsable; CODE: adds code; \\boxed{} ends."""

    name = "fake"
    stop = ("<end_of_step>",)

    def prompt(self, question):
        return f"Q: {question}\n"

    def continuation(self, question, steps):
        return self.prompt(question) + "".join(s + "\n" for s in steps)

    def parse_step(self, text, finish_reason):
        if not text.strip() or text.startswith("??"):
            return None
        boxed = re.search(r"\\boxed\{([^}]*)\}", text)
        code = text.split("CODE:", 1)[1].split("<end_of_code>")[0].strip() if "CODE:" in text else None
        return Step(text, code, "<end_of_code>" in text, boxed is not None, boxed.group(1) if boxed else None)

    def program(self, steps):
        return "\n".join(s.split("CODE:", 1)[1].split("<end_of_code>")[0].strip() for s in steps if "CODE:" in s)

    def with_output(self, step, output):
        return f"{step}<output>{output}<end_of_output>"


class FakeBackend:
    """``script(question, depth, request) -> texts``; records every batch it is sent."""

    def __init__(self, script):
        self.script = script
        self.batches = []

    def generate(self, requests, progress=False):
        self.batches.append(list(requests))
        out = []
        for req in requests:
            lines = req.prompt.split("\n")
            question, depth = lines[0][3:], len(lines) - 2
            texts = self.script(question, depth, req)[: req.n]
            out.append(GenerationResult([Completion(t, len(t) + 1, "stop") for t in texts], len(req.prompt)))
        return out


@dataclass
class Exec:
    ok: bool
    output: str
    error: str | None = None


class FakeSandbox:
    def __init__(self):
        self.programs = []

    def submit(self, code):
        self.programs.append(code)
        future = Future()
        ok = "boom" not in code
        future.set_result(Exec(ok, f"out:{code.splitlines()[-1]}" if ok else "Error: boom", None if ok else "exit code 1"))
        return future


class FakeGrader:
    def __init__(self):
        self.calls = []

    def grade_many(self, pairs):
        self.calls.append(list(pairs))
        return [pred == gold for pred, gold in pairs]


def by_last_step(table, default=("\\boxed{0}",)):
    """A script keyed on the last step of the prompt ('' at the root)."""

    def script(question, depth, req):
        lines = req.prompt.split("\n")
        return list(table.get(lines[-2] if depth else "", default))

    return script


def run(script, problems=None, value_fn=None, **overrides):
    backend, sandbox, grader = FakeBackend(script), FakeSandbox(), FakeGrader()
    problems = problems or [Problem("p0", "q0", "5")]
    kwargs = {k: overrides.pop(k) for k in ("trees", "reward", "parallel_rollouts", "on_tree_done") if k in overrides}
    cfg = SearchConfig(**{"n_candidates": 3, "rollouts": 4, "concurrent_problems": 8, **overrides})
    trees, stats = mcts(problems, SearchEnv(backend, FakeFormat(), cfg, sandbox, grader, value_fn), progress=False, **kwargs)
    return trees, stats, backend, sandbox, grader


def child(tree, node, text):
    (found,) = [c for c in tree.children(node) if c.text == text]
    return found


def assert_consistent(tree: Tree):
    """Visits and values of an inner node are the sums over children that back up (non-dead-ends)."""
    for node in tree.nodes:
        if node.is_terminal:
            assert node.visits == 1 and node.value_sum in (-1.0, 1.0) or node.terminal == "answer"
            continue
        backed = [c for c in tree.children(node) if c.terminal in (None, "answer")]
        assert node.visits == sum(c.visits for c in backed), node
        assert node.value_sum == pytest.approx(sum(c.value_sum for c in backed)), node


# --- selection -------------------------------------------------------------------------------
def test_uct_arithmetic():
    n = Node(1, 0, "a", 1, visits=2, value_sum=1.0)
    assert uct(n, 10, 2.0, 0.0) == pytest.approx(0.5 + 2 * math.sqrt(math.log(10) / 2))
    fresh = Node(2, 0, "b", 1)
    assert uct(fresh, 10, 2.0, 0.0) == 0.0
    assert uct(fresh, 10, 2.0, 0.25) == 0.25
    assert uct(fresh, 10, 2.0, None) == math.inf
    # A prior is one visit carrying its value; no exploration term while the parent has N <= 1.
    assert uct(Node(3, 0, "c", 1, prior=0.6), 1, 2.0, None) == pytest.approx(0.6)
    both = Node(4, 0, "d", 1, visits=1, value_sum=1.0, prior=0.0)
    assert uct(both, 4, 2.0, 0.0) == pytest.approx(0.5 + 2 * math.sqrt(math.log(4) / 2))
    # A virtual loss counts as a visit worth -1.
    assert uct(fresh, 2, 2.0, 0.0, virtual=1) == pytest.approx(-1 + 2 * math.sqrt(math.log(2)))


def _three_children():
    tree = Tree("p", "q", "5")
    tree.root.visits, tree.root.value_sum = 3, 1.0
    tree.add_child(tree.root, "A", visits=2, value_sum=2.0)  # q = 1
    tree.add_child(tree.root, "B", visits=1, value_sum=-1.0)  # q = -1
    tree.add_child(tree.root, "C")  # unvisited
    return tree


@pytest.mark.parametrize(
    "bonus, c_puct, expected",
    [(0.0, 2.0, "A"), (None, 2.0, "C"), (0.0, 0.0, "A"), (0.5, 0.0, "A"), (1.5, 0.0, "C")],
)
def test_select_by_uct_and_unvisited_rule(bonus, c_puct, expected):
    tree = _three_children()
    search = TreeSearch(tree, SearchConfig(unvisited_bonus=bonus, c_puct=c_puct))
    assert search.select_leaf().text == expected


def test_ranking_scores_exactly():
    tree = _three_children()
    search = TreeSearch(tree, SearchConfig(unvisited_bonus=0.0))
    # A: 1 + 2 sqrt(ln3/2) = 2.48; B: -1 + 2 sqrt(ln3) = 1.10; C: 0.
    assert [n.text for n in search.ranked(tree.root, tree.children(tree.root))] == ["A", "B", "C"]


def test_select_skips_terminals_busy_leaves_and_marks_dead():
    tree = _three_children()
    a, b, c = tree.children(tree.root)
    a.terminal = "answer"
    search = TreeSearch(tree, SearchConfig(unvisited_bonus=0.0))
    assert search.select_leaf() is b
    search.busy.add(b.id)
    assert search.select_leaf() is c
    search.busy.add(c.id)
    assert search.select_leaf() is None and tree.root.id not in search.dead  # blocked, not dead
    b.terminal = c.terminal = "too_deep"
    assert search.select_leaf() is None and tree.root.id in search.dead


def test_virtual_loss_follows_the_rollout_and_is_released():

    tree = Tree("p", "q", "5")
    search = TreeSearch(tree, SearchConfig(rollouts=2), parallel_rollouts=2)
    (exp,) = search.pending(fill=1)
    assert exp.leaf is tree.root and search.busy == {0} and search.virtual[0] == 1
    a = tree.add_child(tree.root, "a")
    exp.children = [a]
    search.absorb([exp])
    assert search.busy == {a.id} and (search.virtual[0], search.virtual[a.id]) == (1, 1)
    (exp,) = search.pending(fill=1)  # the only leaf is busy: no second rollout yet
    ans = tree.add_child(a, "\\boxed{5}", terminal="answer")
    exp.children = [ans]
    search.absorb([exp])
    assert search.busy == set() and +search.virtual == {} and search.inflight == []
    assert search.rollouts == 1 and search.pending(fill=2) == []


# --- rollouts, backups, terminals ---------------------------------------------------------------
SCRIPT = {
    "": ["a", "b"],
    "a": ["\\boxed{5}", "\\boxed{7}", "x"],
    "b": ["\\boxed{7}", "y"],
    "x": ["\\boxed{5}"],
    "y": ["\\boxed{5}"],
}


def test_rollouts_back_up_answers_and_stop_when_tree_is_exhausted():
    (tree,), stats, backend, _, grader = run(by_last_step(SCRIPT), rollouts=5)
    root = tree.root
    a, b = tree.children(root)
    x, y = child(tree, a, "x"), child(tree, b, "y")
    # Rollout 0: root -> a (answers +1, -1) -> x (+1). Rollout 1: a is exhausted, so b (-1) -> y (+1).
    assert (a.visits, a.value_sum) == (3, 1.0)
    assert (b.visits, b.value_sum) == (2, 0.0)
    assert (x.visits, x.value_sum, y.visits, y.value_sum) == (1, 1.0, 1, 1.0)
    assert (root.visits, root.value_sum) == (5, 1.0)
    assert a.q == pytest.approx(1 / 3)
    # Budget 5, but nothing is left to expand after 2 rollouts.
    assert tree.meta["rollouts"] == 2 and stats.rollouts == 2
    assert [b_[0].prompt.split("\n")[-2] for b_ in backend.batches] == ["Q: q0", "a", "x", "b", "y"]
    assert stats.batches == 5 and stats.requests == 5
    assert [len(call) for call in grader.calls] == [2, 1, 1, 1]
    answers = {(n.answer, n.correct) for n in tree.answered()}
    assert answers == {("5", True), ("7", False)}
    assert_consistent(tree)


def test_unvisited_rule_changes_the_second_rollout():
    script = by_last_step({"": ["a", "b"], "a": ["\\boxed{5}", "p", "q"], "p": ["\\boxed{5}"], "q": ["\\boxed{5}"],
                           "b": ["\\boxed{5}"]})
    for bonus, expected in [(0.0, "q"), (None, "b")]:
        _, _, backend, _, _ = run(script, rollouts=2, unvisited_bonus=bonus)
        assert [b[0].prompt.split("\n")[-2] for b in backend.batches] == ["Q: q0", "a", "p", expected]


def test_duplicate_candidates_are_dropped():
    script = by_last_step({"": ["x", " x ", "x  ", "y", "\\boxed{1}", "\\boxed{1} "]})
    (tree,), *_ = run(script, n_candidates=6, rollouts=1)
    assert [c.text for c in tree.children(tree.root)] == ["x", "y", "\\boxed{1}"]


def test_unparsable_completions_are_no_step_dead_ends():
    (tree,), stats, *_ = run(by_last_step({"": ["??junk", ""]}))
    kids = tree.children(tree.root)
    assert [(k.terminal, k.visits, k.value_sum) for k in kids] == [("no_step", 1, -1.0), ("no_step", 1, -1.0)]
    assert (tree.root.visits, tree.root.value_sum) == (0, 0.0)  # dead ends do not back up
    assert stats.rollouts == 1


def test_max_depth_makes_too_deep_terminals_but_answers_stay_answers():
    deep = lambda q, depth, req: [f"s{depth}", "\\boxed{5}"]  # noqa: E731
    (tree,), stats, backend, *_ = run(deep, rollouts=1, max_depth=3)
    assert max(n.depth for n in tree.nodes) == 3
    at_limit = [n for n in tree.nodes if n.depth == 3]
    assert sorted(n.terminal for n in at_limit) == ["answer", "too_deep"]
    (too_deep,) = [n for n in at_limit if n.terminal == "too_deep"]
    assert (too_deep.visits, too_deep.value_sum) == (1, -1.0)
    assert stats.batches == 3
    assert tree.root.visits == 3 and tree.root.value_sum == 3.0  # the three correct answers
    assert_consistent(tree)


def test_code_errors_accumulate_to_a_terminal():
    script = by_last_step({"": ["CODE: boom", "CODE: x = 1"], "CODE: boom": ["CODE: y = 2"],
                           "CODE: x = 1": ["\\boxed{5}"]})
    (tree,), _, _, sandbox, _ = run(script, rollouts=3, max_code_errors=2)
    bad, good = tree.children(tree.root)
    assert (bad.code_error, bad.consecutive_errors, bad.terminal) == (True, 1, None)
    assert bad.code_output == "Error: boom"
    (after,) = tree.children(bad)
    assert (after.code_error, after.consecutive_errors, after.terminal) == (True, 2, "code_errors")
    assert (after.visits, after.value_sum) == (1, -1.0)
    assert (good.code_error, good.consecutive_errors, good.code_output) == (False, 0, "out:x = 1")
    assert sandbox.programs == ["boom", "x = 1", "boom\ny = 2"]
    (tree1,), *_ = run(script, rollouts=3, max_code_errors=1)
    assert tree1.children(tree1.root)[0].terminal == "code_errors"


def test_a_right_answer_after_failing_code_backs_up_minus_one():
    """The answer is graded (and recorded) correct, but the broken step earns no +1: rStar's
    threshold of 2 leaves the failing step alive, and a backed-up +1 would make it look good."""
    script = by_last_step({"": ["CODE: boom"], "CODE: boom": ["\\boxed{5}"]})
    (tree,), *_ = run(script, rollouts=1, n_candidates=1, max_code_errors=2)
    (bad,) = tree.children(tree.root)
    (lucky,) = tree.children(bad)
    assert bad.code_error and bad.terminal is None
    assert (lucky.terminal, lucky.correct) == ("answer", True) and not tree.is_success(lucky)
    assert (lucky.value_sum, bad.value_sum, tree.root.value_sum) == (-1.0, -1.0, -1.0)


class ContextLimitedBackend(FakeBackend):
    """Answers ``prompt_too_long`` for prompts past ``limit`` characters, as the vLLM backend does."""

    def __init__(self, script, limit):
        super().__init__(script)
        self.limit = limit

    def generate(self, requests, progress=False):
        results = super().generate(requests, progress)
        return [GenerationResult([], prompt_too_long=True) if len(r.prompt) > self.limit else res
                for r, res in zip(requests, results)]


def test_an_over_long_prompt_is_a_length_dead_end_for_that_node_only():
    backend = ContextLimitedBackend(lambda q, depth, req: [f"step {depth} of {q}"], limit=30)
    problems = [Problem("long", "a question that is long enough already", "5"), Problem("short", "q", "5")]
    cfg = SearchConfig(n_candidates=1, rollouts=2, max_depth=4, concurrent_problems=8)
    trees, stats = mcts(problems, SearchEnv(backend, FakeFormat(), cfg, FakeSandbox(), FakeGrader()), progress=False)
    long_tree, short_tree = trees
    (dead,) = long_tree.children(long_tree.root)
    assert (dead.terminal, dead.text, dead.visits, dead.value_sum) == ("length", "", 1, -1.0)
    # the same batches went on for the other problem, until its own prompt grew past the limit
    assert [n.terminal for n in short_tree.nodes[1:]] == [None, None, None, "length"]
    assert long_tree.meta["rollouts"] == 1 and short_tree.meta["rollouts"] == 1


class LogprobBackend(FakeBackend):
    """Every completion's log-probability is -(its length) (shorter steps are likelier)."""

    def generate(self, requests, progress=False):
        results = super().generate(requests, progress)
        for req, res in zip(requests, results):
            assert req.logprobs  # PUCT asks the engine for them
            res.completions = [Completion(c.text, c.num_tokens, c.finish_reason, logprob=-float(len(c.text)))
                               for c in res.completions]
        return results


def test_alphamath_puct_priors_leaf_values_and_one_expansion_per_simulation():
    script = by_last_step({"": ["a", "bbbb"], "a": ["x", "\\boxed{5}"], "bbbb": ["y"], "x": ["\\boxed{5}"],
                           "y": ["\\boxed{5}"]})
    backend = LogprobBackend(script)
    values = {"a": 0.5, "bbbb": -0.5, "x": 0.2, "y": 0.1}
    value_fn = lambda items: [values.get(steps[-1], 0.0) for _, steps in items]  # noqa: E731
    cfg = SearchConfig(n_candidates=2, rollouts=3, selection="puct", simulation="expansion", value_backup=True,
                       c_puct=1.25, concurrent_problems=8)
    (tree,), stats = mcts([Problem("p0", "q0", "5")], SearchEnv(backend, FakeFormat(), cfg, FakeSandbox(), FakeGrader(),
                                                               value_fn), progress=False)
    a, b = tree.children(tree.root)
    # mean log-probabilities: "a" -1 over 2 tokens, "bbbb" -4 over 5: a softmax of -0.5 and -0.8
    assert a.policy_prior + b.policy_prior == pytest.approx(1.0)
    assert a.policy_prior == pytest.approx(math.exp(-0.5) / (math.exp(-0.5) + math.exp(-0.8)))
    assert (a.prior, b.prior) == (0.5, -0.5)
    # 3 simulations, one expansion each: the root, then the best child by PUCT (a), then a again or x
    assert len(backend.batches) == 3 and tree.meta["rollouts"] == 3
    # the root took in both leaf values of its first expansion (value_backup) and what came after
    assert tree.root.visits >= 2 and a.visits >= 1
    assert [b_[0].prompt.split("\n")[-2] for b_ in backend.batches][:2] == ["Q: q0", "a"]


def test_end_of_code_appends_the_output_to_the_step():
    script = by_last_step({"": ["CODE: print(4)<end_of_code>"]})
    (tree,), _, backend, *_ = run(script, rollouts=1)
    (step,) = tree.children(tree.root)
    assert step.text == "CODE: print(4)<end_of_code><output>out:print(4)<end_of_output>"
    assert backend.batches[1][0].prompt.endswith("<output>out:print(4)<end_of_output>\n")


def test_value_fn_sets_priors_and_steers_the_rollout():
    calls = []

    def value_fn(items):
        calls.append(items)
        return [{"a": 0.2, "b": 0.9}.get(steps[-1], 0.0) for _, steps in items]

    script = by_last_step({"": ["a", "b", "\\boxed{5}"], "b": ["\\boxed{5}"]})
    (tree,), _, backend, *_ = run(script, value_fn=value_fn, rollouts=1)
    a, b, ans = tree.children(tree.root)
    assert (a.prior, b.prior, ans.prior) == (0.2, 0.9, None)  # gold mode: answers are not scored
    assert backend.batches[1][0].prompt.endswith("b\n")
    assert calls[0] == [("q0", ["a"]), ("q0", ["b"])]
    assert b.q == pytest.approx((0.9 + 1.0) / 2)


def test_value_reward_backs_up_scores_instead_of_gold():
    script = by_last_step({"": ["\\boxed{5}", "\\boxed{7}"]})
    (tree,), *_ = run(script, value_fn=lambda items: [0.25] * len(items), reward="value")
    assert (tree.root.visits, tree.root.value_sum) == (2, 0.5)
    assert [(n.correct, n.prior, n.q) for n in tree.children(tree.root)] == [(True, 0.25, 0.25), (False, 0.25, 0.25)]
    with pytest.raises(ValueError):
        run(script, reward="value")


# --- budget, batching, seeds, streaming, resuming ---------------------------------------------------
def wide(question, depth, req):
    """Never runs out of leaves before max_depth; step texts depend on the seed."""
    return ["\\boxed{5}" if depth % 2 else "\\boxed{1}", f"u{req.seed % 997}a", f"u{req.seed % 997}b"]


def test_budget_per_problem_is_exact():
    problems = [Problem("p0", "q0", "5"), Problem("p1", "q1", "5")]
    trees, stats, backend, *_ = run(wide, problems=problems, rollouts=6, max_depth=4)
    assert [t.meta["rollouts"] for t in trees] == [6, 6]
    assert stats.rollouts == 12 and stats.problems == 2
    assert all(len(batch) == 2 for batch in backend.batches)  # both trees in every batch
    for tree in trees:
        assert_consistent(tree)
        assert tree.meta["method"] == "mcts" and tree.meta["tokens"] > 0 and tree.meta["seed"] == 0
    assert stats.generated_tokens == sum(t.meta["tokens"] for t in trees)
    assert stats.prompt_tokens == sum(t.meta["prompt_tokens"] for t in trees)


def test_many_problems_share_each_batch_and_slots_refill():
    script = lambda q, depth, req: ["step"] if depth < 2 else ["\\boxed{x}"]  # noqa: E731
    problems = [Problem(f"p{i}", f"q{i}", "x") for i in range(3)]
    done = []
    trees, stats, backend, _, grader = run(
        script, problems=problems, rollouts=1, n_candidates=1, concurrent_problems=2,
        on_tree_done=lambda t: done.append(t.problem_id), temperature=0.7, max_step_tokens=64,
    )
    assert [len(b) for b in backend.batches] == [2, 2, 2, 1, 1, 1]
    assert [{r.prompt.split("\n")[0] for r in b} for b in backend.batches[:3]] == [{"Q: q0", "Q: q1"}] * 3
    assert {r.prompt.split("\n")[0] for b in backend.batches[3:] for r in b} == {"Q: q2"}
    req = backend.batches[0][0]
    assert (req.n, req.stop, req.max_tokens, req.temperature, req.top_p) == (1, ("<end_of_step>",), 64, 0.7, 0.95)
    assert done == ["p0", "p1", "p2"] and [t.problem_id for t in trees] == done
    assert (stats.batches, stats.requests, stats.problems) == (6, 9, 3)
    assert [len(c) for c in grader.calls] == [2, 1]
    assert all(t.answered()[0].correct for t in trees)


def test_parallel_rollouts_fill_the_batch_with_virtual_loss():
    script = by_last_step({"": ["a", "b", "c"], "a": ["\\boxed{1}", "za"], "b": ["\\boxed{1}", "zb"],
                           "c": ["\\boxed{1}", "zc"]})
    _, stats, backend, *_ = run(script, rollouts=6, parallel_rollouts=None, concurrent_problems=4)
    assert [len(b) for b in backend.batches] == [1, 3, 3]
    prompts = [r.prompt for b in backend.batches for r in b]
    assert len(prompts) == len(set(prompts))  # no leaf expanded twice
    assert stats.rollouts == 3
    _, stats1, backend1, *_ = run(script, rollouts=6, parallel_rollouts=1)
    assert [len(b) for b in backend1.batches] == [1] * 7 and stats1.rollouts == 3


def test_seeds_are_derived_and_runs_reproducible():
    a, _, backend, *_ = run(wide, rollouts=3, max_depth=4)
    b, *_ = run(wide, rollouts=3, max_depth=4)
    strip = lambda t: {**t.to_dict(), "meta": {**t.meta, "seconds": 0}}  # noqa: E731
    assert strip(a[0]) == strip(b[0])
    assert backend.batches[0][0].seed == derive_seed(0, "p0", 0, 0)
    assert backend.batches[1][0].seed == derive_seed(0, "p0", 0, 1)
    _, _, other, *_ = run(wide, rollouts=3, max_depth=4, seed=1)
    assert other.batches[0][0].seed == derive_seed(1, "p0", 0, 0) != backend.batches[0][0].seed


def test_on_tree_done_streams_trees_that_round_trip_through_jsonl(tmp_path):
    path = tmp_path / "trees.jsonl"
    problems = [Problem(f"p{i}", f"q{i}", "5") for i in range(3)]
    trees, *_ = run(wide, problems=problems, rollouts=2, max_depth=3, concurrent_problems=2,
                    on_tree_done=lambda t: append_trees(path, [t]))
    back = {t.problem_id: t for t in read_trees(path)}
    assert sorted(back) == ["p0", "p1", "p2"]
    for tree in trees:
        assert back[tree.problem_id].to_dict() == tree.to_dict()
        assert back[tree.problem_id].root.q == tree.root.q


def test_continuing_a_tree_adds_rollouts_with_new_seeds():
    problems = [Problem("p0", "q0", "5")]
    (tree,), *_ = run(wide, problems=problems, rollouts=2, max_depth=4)
    nodes, visits = len(tree.nodes), tree.root.visits
    (again,), stats, backend, *_ = run(wide, problems=problems, rollouts=3, max_depth=4, seed=1, trees=[tree])
    assert again is tree
    assert tree.meta["rollouts"] == 5 and tree.meta["seeds"] == [0, 1] and stats.rollouts == 3
    assert len(tree.nodes) > nodes and tree.root.visits > visits
    first = backend.batches[0][0]
    depth = len(first.prompt.split("\n")) - 2
    assert first.seed == derive_seed(1, "p0", 2, depth)  # rollout numbering continues
    assert_consistent(tree)
    with pytest.raises(ValueError, match="without a matching problem"):
        run(wide, problems=[Problem("other", "q", "1")], trees=[tree])


def test_run_search_dispatches_and_rejects_unknown_methods():
    backend = FakeBackend(by_last_step(SCRIPT))
    cfg = SearchConfig(n_candidates=3, rollouts=2)
    trees, stats = run_search("mcts", [Problem("p0", "q0", "5")], SearchEnv(backend, FakeFormat(), cfg, FakeSandbox(),
                                                                          FakeGrader()), progress=True)
    assert isinstance(stats, SearchStats) and trees[0].meta["method"] == "mcts"
    assert stats.seconds > 0 and stats.tokens_per_second > 0
    with pytest.raises(ValueError, match="unknown search method"):
        run_search("dfs", [], SearchEnv(backend, FakeFormat(), cfg, FakeSandbox(), FakeGrader()))


def test_the_search_says_where_its_time_went():
    """SearchStats splits the wall time: generate, sandbox waits, grading, scoring (each part at least
    what the slow fakes sleep, all parts within the total); extra searches add up."""
    import time

    class Slow:
        def __init__(self, inner, method, seconds):
            self.inner, self.method, self.seconds = inner, method, seconds

        def __getattr__(self, name):
            if name != self.method:
                return getattr(self.inner, name)

            def slow(*args):
                time.sleep(self.seconds)
                return getattr(self.inner, name)(*args)
            return slow

    backend, sandbox, grader = FakeBackend(by_last_step(SCRIPT)), FakeSandbox(), FakeGrader()
    slow_env = SearchEnv(Slow(backend, "generate", 0.02), FakeFormat(), SearchConfig(n_candidates=3, rollouts=5),
                         sandbox, Slow(grader, "grade_many", 0.01), lambda items: [0.0 for _ in items])
    (_,), stats = mcts([Problem("p0", "q0", "5")], slow_env, progress=False)
    assert stats.generate_seconds >= 0.02 * stats.batches
    assert stats.grading_seconds >= 0.01 * len(grader.calls)
    parts = stats.time_split()
    assert set(parts) == {"seconds_generate", "seconds_code", "seconds_grading", "seconds_scoring"}
    assert sum(parts.values()) <= stats.seconds
    total = SearchStats()
    total.add(stats)
    total.add(stats)
    assert total.generate_seconds == 2 * stats.generate_seconds and total.batches == 2 * stats.batches


class StreamingBackend(FakeBackend):
    """A backend with its own stream that finishes one request per poll, question q0's first (its
    steps are short), and logs which questions are in flight whenever requests are submitted."""

    def __init__(self, script):
        super().__init__(script)
        self.streams = []

    def stream(self):
        self.streams.append(_OneAtATime(self))
        return self.streams[-1]


class _OneAtATime:
    def __init__(self, backend):
        self.backend, self.queued, self.tickets, self.submits = backend, [], 0, []

    def submit(self, requests):
        tickets = list(range(self.tickets, self.tickets + len(requests)))
        self.tickets += len(requests)
        self.submits.append(([r.prompt.split("\n")[0] for r in requests],
                             sorted({r.prompt.split("\n")[0] for _, r in self.queued})))
        self.queued += zip(tickets, requests)
        return tickets

    def poll(self):
        if not self.queued:
            return []
        first = min(self.queued, key=lambda item: (item[1].prompt.split("\n")[0], item[0]))
        self.queued.remove(first)
        return [(first[0], self.backend.generate([first[1]])[0])]

    def close(self):
        self.closed_with = len(self.queued)
        self.queued = []


def test_continuous_feed_submits_a_tree_step_while_others_decode_and_samples_the_same_trees():
    problems = [Problem("p0", "q0", "5"), Problem("p1", "q1", "5"), Problem("p2", "q2", "1")]

    def search(backend, feed):
        cfg = SearchConfig(n_candidates=3, rollouts=4, max_depth=4, concurrent_problems=2, feed=feed)
        return mcts(problems, SearchEnv(backend, FakeFormat(), cfg, FakeSandbox(), FakeGrader()), progress=False)

    waves, wave_stats = search(FakeBackend(wide), "waves")
    streaming = StreamingBackend(wide)
    continuous, stats = search(streaming, "continuous")
    strip = lambda t: {**t.to_dict(), "meta": {**t.meta, "seconds": 0}}  # noqa: E731
    assert [strip(t) for t in continuous] == [strip(t) for t in waves]
    assert (stats.rollouts, stats.requests, stats.generated_tokens) == (
        wave_stats.rollouts, wave_stats.requests, wave_stats.generated_tokens)
    (stream,) = streaming.streams
    assert stream.closed_with == 0
    # q0 went on to its next steps while q1's first step was still on the engine
    assert any(sent == ["Q: q0"] and "Q: q1" in waiting for sent, waiting in stream.submits)
    assert all(len(b) == 1 for b in streaming.batches)  # one request at a time reached the engine
    _, _, waves_backend, *_ = run(wide, problems=problems, rollouts=4, max_depth=4, concurrent_problems=2,
                                  feed="continuous")  # a backend without a stream falls back to waves
    assert max(len(b) for b in waves_backend.batches) == 2


def test_a_search_that_dies_closes_its_stream_with_what_was_in_flight():
    """The engine outlives a search: requests a dead search left in flight would come back into the
    next one, so the Driver closes its stream however it ends."""
    problems = [Problem("p0", "q0", "5"), Problem("p1", "q1", "5")]
    streaming = StreamingBackend(wide)
    cfg = SearchConfig(n_candidates=3, rollouts=4, max_depth=4, concurrent_problems=2)

    def die(tree):
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        mcts(problems, SearchEnv(streaming, FakeFormat(), cfg, FakeSandbox(), FakeGrader()), progress=False,
             on_tree_done=die)
    (stream,) = streaming.streams
    assert stream.closed_with == 1 and stream.queued == []  # p1's step was on the engine when p0 finished


def test_check_arithmetic_fails_underived_steps_as_failing_code():
    """check_arithmetic: a natural step with a false equation is a failing step (code_error), its
    lucky right answer backs up -1, and max_code_errors of them end the branch; a derived step and
    its answer back up +1."""
    problem = Problem("p0", "Nina has 13 stickers and gives 2 away. How many are left?", "11")
    script = by_last_step({"": ["13 - 2 = 12 left.", "13 - 2 = 11 left."],
                           "13 - 2 = 12 left.": ["\\boxed{11}"], "13 - 2 = 11 left.": ["\\boxed{11}"]})
    (tree,), *_ = run(script, [problem], rollouts=2, step_format="natural", check_arithmetic=True, max_code_errors=2)
    false, true = tree.children(tree.root)
    assert (false.code_error, false.consecutive_errors, true.code_error) == (True, 1, False)
    (lucky,) = tree.children(false)
    (earned,) = tree.children(true)
    assert lucky.correct and earned.correct and not tree.is_success(lucky) and tree.is_success(earned)
    assert (false.value_sum, true.value_sum) == (-1.0, 1.0)
    (pruned,), *_ = run(script, [problem], rollouts=2, step_format="natural", check_arithmetic=True, max_code_errors=1)
    assert pruned.children(pruned.root)[0].terminal == "code_errors"
    (unchecked,), *_ = run(script, [problem], rollouts=2, step_format="natural")
    assert not any(n.code_error for n in unchecked.nodes)
