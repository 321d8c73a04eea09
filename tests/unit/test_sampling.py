"""Best-of-N and greedy: independent chains, advanced step by step in shared batches."""

from __future__ import annotations

import pytest
from search_fakes import FakeFormat, Problem, SplittingFormat

from evomath.backends.base import Completion, GenerationResult
from evomath.config import SandboxConfig, SearchConfig
from evomath.search import SearchEnv, best_of_n, greedy, run_search


class FakeBackend:
    """``script(last_step, request) -> texts``; records every batch."""

    def __init__(self, script):
        self.script = script
        self.batches = []

    def generate(self, requests, progress=False):
        self.batches.append(list(requests))
        return [
            GenerationResult([Completion(t, 4, "stop") for t in self.script(req.prompt, req)[: req.n]], 10)
            for req in requests
        ]


class FakeGrader:
    def __init__(self):
        self.calls = []

    def grade_many(self, pairs):
        self.calls.append(list(pairs))
        return [p == g for p, g in pairs]


def last_step(prompt):
    last = prompt.split("\n")[-2]
    return "" if last.startswith("Q: ") else last


def table_script(table):
    return lambda prompt, req: list(table[last_step(prompt)])


CHAINS = {"": ["s", "s", "\\boxed{5}"], "s": ["t"], "t": ["\\boxed{6}"]}


# --- best-of-N ------------------------------------------------------------------------------------
def test_best_of_n_samples_n_chains_per_problem_in_shared_batches():
    problems = [Problem("p0", "q0", "5"), Problem("p1", "q1", "6")]
    backend, grader = FakeBackend(table_script(CHAINS)), FakeGrader()
    cfg = SearchConfig(temperature=0.8, max_step_tokens=32)
    trees, stats = best_of_n(problems, SearchEnv(backend, FakeFormat(), cfg, None, grader), n=3, progress=False)
    # Root: one request with n=3 per problem; then one request per unfinished chain (2 per problem).
    assert [[r.n for r in b] for b in backend.batches] == [[3, 3], [1, 1, 1, 1], [1, 1, 1, 1]]
    assert all(r.temperature == 0.8 and r.max_tokens == 32 for b in backend.batches for r in b)
    for tree in trees:
        # Identical samples are independent chains: nothing is deduplicated at the root.
        assert [c.text for c in tree.children(tree.root)] == ["s", "s", "\\boxed{5}"]
        assert all(len(tree.children(n)) <= 1 for n in tree.nodes[1:])  # single paths
        assert sorted(n.answer for n in tree.answered()) == ["5", "6", "6"]
        assert tree.meta["rollouts"] == 3 and tree.meta["method"] == "bon"
        assert tree.root.visits == 3
    assert [n.correct for n in trees[0].answered()] == [True, False, False]
    assert sum(n.correct for n in trees[1].answered()) == 2
    assert [len(c) for c in grader.calls] == [2, 4]
    assert (stats.problems, stats.rollouts, stats.batches, stats.requests) == (2, 6, 3, 10)
    assert stats.generated_tokens == 4 * (3 + 3 + 8) and stats.prompt_tokens == 10 * 10


class SlowStepBackend(FakeBackend):
    """A backend with its own stream that finishes one request per poll, a request after the step
    'slow' last; it logs each submission beside the steps still on the engine."""

    def stream(self):
        backend, queued = self, []

        class Stream:
            submits = []

            def submit(self, requests):
                start = sum(len(sent) for sent, _ in self.submits)
                self.submits.append(([last_step(r.prompt) for r in requests], [last_step(r.prompt) for _, r in queued]))
                queued.extend(enumerate(requests, start))
                return [ticket for ticket, _ in queued[-len(requests):]]

            def poll(self):
                first = min(queued, key=lambda item: (last_step(item[1].prompt) == "slow", item[0]))
                queued.remove(first)
                return [(first[0], backend.generate([first[1]])[0])]

            def close(self):
                pass

        self.opened = Stream()
        return self.opened


def test_a_chain_advances_while_a_slower_chain_of_its_tree_decodes():
    """Chains are independent: the Driver absorbs each one's step as soon as it is back and sends its
    next, instead of waiting for the tree's slowest sequence; the samples are the same as in waves."""
    script = table_script({"": ["s", "slow"], "s": ["u"], "u": ["\\boxed{5}"], "slow": ["\\boxed{6}"]})
    cfg = SearchConfig(max_step_tokens=32)
    streaming = SlowStepBackend(script)
    trees, stats = best_of_n([Problem("p0", "q0", "5")], SearchEnv(streaming, FakeFormat(), cfg, None, FakeGrader()),
                             n=2, progress=False)
    waves, wave_stats = best_of_n([Problem("p0", "q0", "5")],
                                  SearchEnv(FakeBackend(script), FakeFormat(), cfg.model_copy(update={"feed": "waves"}),
                                            None, FakeGrader()), n=2, progress=False)
    assert (["u"], ["slow"]) in streaming.opened.submits  # chain 's' went on while 'slow' was on the engine
    paths = lambda tree: sorted((tree.steps_text(n), n.correct) for n in tree.answered())  # noqa: E731
    assert paths(trees[0]) == paths(waves[0]) == [(["s", "u", "\\boxed{5}"], True), (["slow", "\\boxed{6}"], False)]
    assert (stats.rollouts, stats.requests, stats.generated_tokens) == (2, 4, wave_stats.generated_tokens)


def test_whole_solutions_sample_each_solution_in_one_request_split_into_steps():
    """whole_solutions: one request per problem (n samples, no stop markers, the depth's budget)
    and no second batch; each sample becomes its chain of steps, graded like a step-wise one. A
    format that runs code between steps (no ``steps_in_one_request``) ignores it."""
    script = {"": ["s\nt\n\\boxed{6}", "s\n\\boxed{5}", "\\boxed{5}"]}
    backend = FakeBackend(lambda prompt, req: script[last_step(prompt)])
    cfg = SearchConfig(max_step_tokens=32, max_depth=5, whole_solutions=True)
    [tree], stats = best_of_n([Problem("p0", "q0", "5")], SearchEnv(backend, SplittingFormat(), cfg, None, FakeGrader()),
                              n=3, progress=False)
    assert [[(r.n, r.stop, r.max_tokens) for r in b] for b in backend.batches] == [[(3, (), 160)]]
    chains = [[n.text for n in tree.path(end)] for end in tree.answered()]
    assert sorted(chains) == [["\\boxed{5}"], ["s", "\\boxed{5}"], ["s", "t", "\\boxed{6}"]]
    assert [n.correct for n in tree.answered()] == [False, True, True] and tree.meta["rollouts"] == 3
    assert (stats.requests, stats.rollouts) == (1, 3)
    backend = FakeBackend(table_script(CHAINS))
    best_of_n([Problem("p0", "q0", "5")], SearchEnv(backend, FakeFormat(), cfg, None, FakeGrader()), n=3, progress=False)
    assert len(backend.batches) == 3 and all(r.stop == ("\n",) for b in backend.batches for r in b)


def test_best_of_n_defaults_to_n_samples_and_seeds_chains_apart():
    backend = FakeBackend(lambda prompt, req: [f"x{req.seed}"] * req.n if not last_step(prompt) else ["\\boxed{1}"])
    trees, _ = best_of_n([Problem("p0", "q0", "1")], SearchEnv(backend, FakeFormat(), SearchConfig(n_samples=4), None,
                                                              FakeGrader()), progress=False)
    assert backend.batches[0][0].n == 4
    assert len({r.seed for r in backend.batches[1]}) == 4


def test_best_of_n_scores_answers_with_a_value_fn():
    calls = []

    def value_fn(items):
        calls.append(list(items))
        return [0.5 if steps[-1] == "\\boxed{5}" else -0.5 for _, steps in items]

    backend = FakeBackend(table_script(CHAINS))
    (tree,), _ = best_of_n([Problem("p0", "q0", "5")], SearchEnv(backend, FakeFormat(), SearchConfig(), None, FakeGrader(),
                                                                value_fn), n=3, progress=False)
    assert sorted((n.answer, n.prior) for n in tree.answered()) == [("5", 0.5), ("6", -0.5), ("6", -0.5)]
    assert all(n.prior is None for n in tree.nodes if not n.is_terminal)  # only answers are scored
    assert [len(c) for c in calls] == [1, 2]


def test_chains_end_at_max_depth_and_on_unparsable_steps():
    script = lambda prompt, req: [""] if last_step(prompt) == "s1" else [f"s{len(prompt.split(chr(10))) - 1}"] * req.n  # noqa: E731
    backend = FakeBackend(script)
    (tree,), stats = best_of_n([Problem("p0", "q0", "5")], SearchEnv(backend, FakeFormat(), SearchConfig(max_depth=3), None,
                                                                    FakeGrader()), n=2, progress=False)
    # Both chains: s1 at depth 1, then an empty completion -> no_step at depth 2.
    assert sorted(n.terminal for n in tree.terminals()) == ["no_step", "no_step"]
    (deep,) = best_of_n([Problem("p0", "q0", "5")], SearchEnv(FakeBackend(lambda p, r: ["more"] * r.n), FakeFormat(),
                        SearchConfig(max_depth=3), None, FakeGrader()), n=1, progress=False)[0]
    assert [(n.depth, n.terminal) for n in deep.nodes[1:]] == [(1, None), (2, None), (3, "too_deep")]
    assert (deep.nodes[-1].visits, deep.nodes[-1].value_sum, deep.root.visits) == (1, -1.0, 0)


# --- greedy ---------------------------------------------------------------------------------------
def test_greedy_is_one_chain_at_temperature_zero():
    problems = [Problem("p0", "q0", "6"), Problem("p1", "q1", "7")]
    backend = FakeBackend(table_script({"": ["s"], "s": ["t"], "t": ["\\boxed{6}"]}))
    trees, stats = greedy(problems, SearchEnv(backend, FakeFormat(), SearchConfig(), None, FakeGrader()), progress=False)
    assert [[(r.n, r.temperature) for r in b] for b in backend.batches] == [[(1, 0.0)] * 2] * 3
    assert [[n.text for n in t.nodes[1:]] for t in trees] == [["s", "t", "\\boxed{6}"]] * 2
    assert [t.answered()[0].correct for t in trees] == [True, False]
    assert [t.meta["method"] for t in trees] == ["greedy", "greedy"] and stats.rollouts == 2


@pytest.mark.parametrize("method, n_requests", [("bon", 3), ("greedy", 1)])
def test_run_search_routes_sampling_methods(method, n_requests):
    backend = FakeBackend(table_script({"": ["\\boxed{1}"] * 3}))
    cfg = SearchConfig(n_samples=3)
    trees, _ = run_search(method, [Problem("p0", "q0", "1")], SearchEnv(backend, FakeFormat(), cfg, None, FakeGrader()),
                          progress=False)
    assert trees[0].meta["method"] == method and backend.batches[0][0].n == n_requests


# --- the real code format and sandbox ---------------------------------------------------------------
def test_code_steps_run_in_the_sandbox_and_show_their_output():
    from evomath.formats import make_format
    from evomath.sandbox import Sandbox

    steps = {
        "<code>\n": "# Step 1: add\nx = 2 + 3\n<end_of_step>",
        "<end_of_step>": "\n# Step 2: print it\nprint(x)\n<end_of_code>",
        "<end_of_output>\n": "<answer>So the answer is \\boxed{5}.<end_of_answer>",
    }

    def script(prompt, req):
        return [next(text for end, text in steps.items() if prompt.endswith(end))] * req.n

    fmt = make_format("code", "few_shot")
    with Sandbox(SandboxConfig(workers=1)) as sandbox:
        (tree,), _ = best_of_n([Problem("p0", "2 + 3?", "5")], SearchEnv(FakeBackend(script), fmt, SearchConfig(), sandbox,
                                                                    FakeGrader()), n=2, progress=False)
    chain = tree.path(tree.answered()[0])
    assert [n.depth for n in chain] == [1, 2, 3]
    assert chain[1].text.endswith("<end_of_code>\n<output>5<end_of_output>\n")
    assert (chain[0].code_output, chain[1].code_output) == ("", "5\n")
    assert not any(n.code_error for n in tree.nodes)
    assert [n.correct for n in tree.answered()] == [True, True]


def test_force_final_answer_opens_the_last_allowed_step_with_the_answer_prefix():
    class PrefixFormat(FakeFormat):
        answer_prefix = "\\boxed{"

    # The model never concludes on its own: "s" forever, "7}" once prompted with the prefix.
    backend = FakeBackend(lambda prompt, req: ["7}"] if prompt.endswith("\\boxed{") else ["s"])
    problem = Problem("p0", "q0", "7")
    for force, answers in ((False, []), (True, ["7"])):
        cfg = SearchConfig(max_depth=3, force_final_answer=force)
        (tree,), _ = greedy([problem], SearchEnv(backend, PrefixFormat(), cfg, None, FakeGrader()), progress=False)
        leaf = tree.nodes[-1]
        assert [n.answer for n in tree.answered()] == answers
        assert leaf.depth == 3 and leaf.terminal == ("answer" if force else "too_deep")
        if force:  # the prefix is part of the step, so the trajectory reads as the model's text
            assert leaf.text == "\\boxed{7}" and leaf.correct
    # A format without an answer prefix is left alone.
    (tree,), _ = greedy([problem], SearchEnv(backend, FakeFormat(), SearchConfig(max_depth=3, force_final_answer=True), None,
                                      FakeGrader()), progress=False)
    assert tree.nodes[-1].terminal == "too_deep"
