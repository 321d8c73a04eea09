"""Math-Shepherd's completer on a scripted policy: which prefixes are completed, and the labels."""

from __future__ import annotations

from search_fakes import FakeFormat, Problem
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
