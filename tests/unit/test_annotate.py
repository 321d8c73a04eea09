"""Math-Shepherd's completer on a scripted policy: which prefixes are completed, and the labels."""

from __future__ import annotations

from search_fakes import FakeFormat, Problem, SplittingFormat
from test_sampling import FakeBackend, FakeGrader, last_step

from evomath.config import SearchConfig
from evomath.search import SearchEnv
from evomath.search.annotate import annotate


def test_hard_and_soft_estimates_from_continuations_of_every_step():
    """Solutions: 'a' -> 'b' -> 5 (right) and 'x' -> 9 (wrong). Continuations from 'a' reach 5 half
    the time, from 'a b' always; from 'x' never."""
    counter = {"a": 0}

    def script(prompt, req):
        step = last_step(prompt)
        if step == "" and req.n == 2:  # the sampled solutions
            return ["a", "x"]
        if step == "a":  # continuations after 'a': alternate a right and a wrong route
            counter["a"] += 1
            return ["b", "c"] if req.n == 3 else (["b"] if counter["a"] % 2 else ["c"])
        return {"b": ["\\boxed{5}"], "c": ["\\boxed{7}"], "x": ["\\boxed{9}"]}[step] * req.n

    backend = FakeBackend(script)
    env = SearchEnv(backend, FakeFormat(), SearchConfig(max_depth=6), None, FakeGrader())
    records, sampling, completing = annotate([Problem("p", "q", "5")], env, samples=2, completions=3, progress=False)
    right, wrong = records
    assert right["steps"] == ["a", "b", "\\boxed{5}"] and right["correct"]
    assert right["hard"] == [1.0, 1.0, 1.0]
    assert right["soft"][1:] == [1.0, 1.0] and 0 < right["soft"][0] < 1
    assert wrong["steps"] == ["x", "\\boxed{9}"] and wrong["hard"] == [0.0, 0.0] and wrong["soft"] == [0.0, 0.0]
    # one batch carried the continuations of every prefix: 'a', 'a b' and 'x' (3 each)
    assert sorted(r.n for r in backend.batches[sampling.batches]) == [3, 3, 3]
    assert completing.generated_tokens > 0 and sampling.problems == 1


def test_a_continuation_is_one_request_split_into_steps():
    """With a format that runs no code, each continuation is decoded to its end in one request (no
    stop markers, a budget of the steps left) and cut into one node per line; the labels read the
    same as from step-by-step continuations."""

    def script(prompt, req):
        step = last_step(prompt)
        if req.stop:  # the sampled solutions, step by step: a b 5 and x 9
            return {"": ["a", "x"], "a": ["b"], "b": ["\\boxed{5}"], "x": ["\\boxed{9}"]}[step]
        return {"a": ["b\n\\boxed{5}", "c\n\\boxed{7}", "b\n\\boxed{5}"], "b": ["\\boxed{5}"] * 3,
                "x": ["\\boxed{9}"] * 3}[step]

    backend = FakeBackend(script)
    env = SearchEnv(backend, SplittingFormat(), SearchConfig(max_depth=6, max_step_tokens=10), None, FakeGrader())
    records, sampling, completing = annotate([Problem("p", "q", "5")], env, samples=2, completions=3, progress=False)
    right, wrong = records
    assert right["steps"] == ["a", "b", "\\boxed{5}"]
    assert right["hard"] == [1.0, 1.0, 1.0] and right["soft"] == [2 / 3, 1.0, 1.0]
    assert wrong["hard"] == [0.0, 0.0]
    completer = [r for batch in backend.batches[sampling.batches:] for r in batch]
    assert len(completer) == 3 and {r.stop for r in completer} == {()}  # one request per prefix, no stops
    # the budget is the steps left to the depth limit (6): 'a' and 'x' at depth 1, 'a b' at 2
    assert sorted(r.max_tokens for r in completer) == [40, 50, 50]


def test_a_continuation_stops_at_the_depth_limit_and_forces_its_answer():
    """Lines past the depth budget are dropped; the forced last step is a request of its own,
    opened with the answer prefix; the tokens of a request are shared out over its steps."""
    from evomath.search.engine import Driver, Expander
    from evomath.search.sampling import Chains
    from evomath.tree import Tree

    def script(prompt, req):
        if prompt.endswith("\\boxed{"):
            return ["5}"]
        return ["s1\ns2\ns3\ns4\ns5"]

    backend = FakeBackend(script)
    config = SearchConfig(max_depth=4, max_step_tokens=10, force_final_answer=True)
    env = SearchEnv(backend, SplittingFormat(), config, None, FakeGrader())
    tree = Tree("p", "q", "5")
    [grown], stats = Driver(Expander(env), config, "completer", None, False).run(
        [Problem("p", "q", "5")], lambda problem: Chains(tree, 1, 0, whole=True))
    path = [n.text for n in grown.nodes[1:]]
    assert path == ["s1", "s2", "s3", "\\boxed{5}"] and grown.nodes[-1].correct
    first, forced = backend.batches
    assert first[0].max_tokens == 30 and forced[0].prompt.endswith("\\boxed{") and forced[0].stop == ("\n",)
    assert sum(n.num_tokens for n in grown.nodes[1:4]) == 4  # one completion's 4 tokens over its 3 steps
