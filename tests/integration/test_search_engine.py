"""Every search method on the real engine (embedded SmolLM2-135M): structure, not accuracy."""

from __future__ import annotations

import pytest

from evomath.config import SandboxConfig, SearchConfig
from evomath.formats import make_format
from evomath.grading import Grader
from evomath.problems import load_benchmark
from evomath.sandbox import Sandbox
from evomath.search import SearchEnv, run_search
from evomath.tree import TERMINAL_KINDS, Tree, read_trees, write_trees

pytestmark = pytest.mark.slow

SMALL = dict(
    rollouts=2, n_candidates=3, max_step_tokens=40, max_depth=4, temperature=0.8, n_samples=2,
    beam_width=2, beam_expand=2, concurrent_problems=3,
)


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(workers=1)) as box:
        yield box


@pytest.fixture(scope="module")
def grader():
    with Grader(workers=1) as g:
        yield g


def length_value(items):
    """A stand-in PPM: deterministic, in [-1, 1], and different across candidates."""
    return [((len("".join(steps)) * 37) % 200) / 100 - 1 for _, steps in items]


def check_tree(tree: Tree, config: SearchConfig) -> None:
    """Links, depths, terminal kinds, grading and the backup invariant of a searched tree."""
    for node in tree.nodes:
        assert tree.nodes[node.id] is node
        for cid in node.children:
            assert tree.nodes[cid].parent == node.id and tree.nodes[cid].depth == node.depth + 1
        assert node.depth <= config.max_depth
        if node.is_terminal:
            assert node.terminal in TERMINAL_KINDS and not node.children
            if node.terminal == "answer":
                assert node.correct is not None and node.visits >= 1
            else:
                assert (node.visits, node.value_sum) == (1, -1.0)
        else:
            backed = [c for c in tree.children(node) if c.terminal in (None, "answer")]
            assert node.visits == sum(c.visits for c in backed)
            assert node.value_sum == pytest.approx(sum(c.value_sum for c in backed))
    assert tree.meta["tokens"] >= sum(n.num_tokens for n in tree.nodes) > 0


@pytest.mark.parametrize("method", ["mcts", "beam", "bon", "greedy"])
def test_method_on_demo_problems(method, policy_backend, sandbox, grader, tmp_path):
    problems = load_benchmark("demo_test", limit=3)
    fmt = make_format("natural", "chat", chat=policy_backend.chat_prompt)
    config = SearchConfig(step_format="natural", prompt_style="chat", **SMALL)
    value_fn = length_value if method == "beam" else None
    done = []
    trees, stats = run_search(method, problems, SearchEnv(policy_backend, fmt, config, None, grader, value_fn),
                              on_tree_done=done.append, progress=False)
    assert [t.problem_id for t in trees] == [p.id for p in problems] and len(done) == 3
    for tree in trees:
        check_tree(tree, config)
        assert tree.meta["method"] == method
        assert tree.terminals(), "every search ends some trajectory"
    assert stats.problems == 3 and stats.batches >= 1 and stats.requests >= 3
    assert stats.generated_tokens == sum(t.meta["tokens"] for t in trees) > 0
    assert stats.prompt_tokens == sum(t.meta["prompt_tokens"] for t in trees) > 0
    if method == "greedy":
        assert stats.rollouts == 3 and all(len(t.children(t.root)) == 1 for t in trees)
    if method == "bon":
        assert all(len(t.children(t.root)) == 2 for t in trees)
    if method == "beam":
        assert all(n.prior is not None for t in trees for n in t.nodes[1:] if not n.is_terminal)
    path = tmp_path / "trees.jsonl"
    write_trees(path, trees)
    assert [t.to_dict() for t in read_trees(path)] == [t.to_dict() for t in trees]


def test_mcts_code_format_on_gsm8k(policy_backend, sandbox, grader):
    problems = load_benchmark("gsm8k", limit=3)
    fmt = make_format("code", "few_shot")
    config = SearchConfig(**{**SMALL, "max_step_tokens": 64})
    trees, stats = run_search("mcts", problems, SearchEnv(policy_backend, fmt, config, sandbox, grader), progress=False)
    ran = [n for t in trees for n in t.nodes if n.code_output is not None]
    assert ran, "some step ran its program"
    for tree in trees:
        check_tree(tree, config)
        assert 1 <= tree.meta["rollouts"] <= config.rollouts
        assert len(tree.children(tree.root)) <= config.n_candidates
    for node in ran:
        assert node.code_error == (node.consecutive_errors > 0)
    assert stats.rollouts == sum(t.meta["rollouts"] for t in trees)


def test_check_arithmetic_marks_exactly_the_underived_steps(policy_backend, grader):
    """MCTS on the real engine with check_arithmetic: a step is a failing step iff the gold-free
    check rejects it, a path with one backs up no success, and one failing step ends a branch
    (max_code_errors 1, as rStar keeps only the nodes whose code runs)."""
    from evomath.arithmetic import derivation_error

    problems = load_benchmark("demo_train:1-2", limit=3)
    fmt = make_format("natural", "chat", chat=policy_backend.chat_prompt)
    config = SearchConfig(step_format="natural", prompt_style="chat", force_final_answer=True, check_arithmetic=True,
                          max_code_errors=1, **SMALL)
    trees, _ = run_search("mcts", problems, SearchEnv(policy_backend, fmt, config, None, grader), progress=False)
    steps = [(t, n) for t in trees for n in t.nodes[1:] if n.text and n.terminal not in ("no_step", "length")]
    assert any(n.code_error for _, n in steps), "the 135M policy writes some underived arithmetic"
    for tree, node in steps:
        assert node.code_error == (derivation_error(tree.question, tree.steps_text(node)) is not None), node.text
        if node.code_error and node.terminal != "answer":
            assert node.terminal == "code_errors" and not node.children
    for tree in trees:
        check_tree(tree, config)
        assert all(not tree.is_success(end) for end in tree.terminals() if any(n.code_error for n in tree.path(end)))


def test_whole_solutions_are_one_request_each_and_split_into_steps(policy_backend, grader):
    """Best-of-N with whole_solutions on the real engine: the root's request writes every sample
    to its end, split into steps at the blank lines; a sample takes another request only for its
    forced answer or after its budget ran out mid-paragraph, so there are fewer requests than steps
    (step by step: one per step); the trees keep every invariant of step-wise ones."""
    problems = load_benchmark("demo_test", limit=3)
    fmt = make_format("natural", "chat", chat=policy_backend.chat_prompt)
    config = SearchConfig(step_format="natural", prompt_style="chat", force_final_answer=True, whole_solutions=True,
                          **SMALL)
    trees, stats = run_search("bon", problems, SearchEnv(policy_backend, fmt, config, None, grader), progress=False)
    forced = sum(1 for t in trees for n in t.nodes if n.text.startswith(fmt.answer_prefix))
    steps = sum(end.depth for t in trees for end in t.terminals())
    step_by_step = len(problems) + steps - len(problems) * config.n_samples  # the root's, then one per later step
    assert len(problems) + forced <= stats.requests <= step_by_step
    for tree in trees:
        check_tree(tree, config)
        assert len(tree.children(tree.root)) == config.n_samples and len(tree.terminals()) == config.n_samples
        for end in tree.terminals():  # a step ends at the first blank line, if any (or where the budget ran out)
            assert all("\n\n" not in step[:-2] for step in tree.steps_text(end))


@pytest.mark.parametrize("one_request", [True, False])
def test_completer_labels_every_step_of_real_samples(one_request, policy_backend, grader):
    """Math-Shepherd's completer on the real engine, each continuation in one request or step by
    step: a label per step, soft in [0, 1] with hard = (soft > 0), the last one the outcome."""
    from evomath.search.annotate import annotate

    problems = load_benchmark("demo_test", limit=2)
    fmt = make_format("natural", "chat", chat=policy_backend.chat_prompt)
    config = SearchConfig(step_format="natural", prompt_style="chat", force_final_answer=True, **SMALL)
    records, sampling, completing = annotate(problems, SearchEnv(policy_backend, fmt, config, None, grader),
                                             samples=2, completions=2, progress=False, one_request=one_request)
    assert len(records) == 4 and completing.generated_tokens > 0
    for record in records:
        assert len(record["hard"]) == len(record["soft"]) == len(record["steps"])
        assert all(0.0 <= s <= 1.0 and h == float(s > 0) for h, s in zip(record["hard"][:-1], record["soft"][:-1]))
        assert record["hard"][-1] == record["soft"][-1] == float(record["correct"])
    prefixes = sum(len(r["steps"]) - 1 for r in records)
    if one_request:  # a request per continuation, and one more for each that reached the forced step
        assert prefixes <= completing.requests < prefixes * 2 * config.max_depth
