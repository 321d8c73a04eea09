"""Step-level beam search SBS(B1, B2) on a scripted policy."""

from __future__ import annotations

import pytest
from search_fakes import FakeFormat, Problem

from evomath.backends.base import Completion, GenerationResult
from evomath.config import SearchConfig
from evomath.search import SearchEnv, beam_search, run_search


class FakeBackend:
    """Candidates below a step are '<step>.<i>' (or the table's override); records every batch."""

    def __init__(self, table=None):
        self.table = table or {}
        self.batches = []

    def generate(self, requests, progress=False):
        self.batches.append(list(requests))
        out = []
        for req in requests:
            last = req.prompt.split("\n")[-2]
            last = "" if last.startswith("Q: ") else last
            texts = self.table.get(last, [f"{last}.{i}" for i in range(req.n)])[: req.n]
            out.append(GenerationResult([Completion(t, 2, "stop") for t in texts], 3))
        return out


class FakeGrader:
    def grade_many(self, pairs):
        return [p == g for p, g in pairs]


def score_by_text(scores):
    """A value function from a step-text table; unknown steps score 0."""
    calls = []

    def value_fn(items):
        calls.append(list(items))
        return [scores.get(steps[-1], 0.0) for _, steps in items]

    value_fn.calls = calls
    return value_fn


def search(table=None, value_fn=None, problems=None, **cfg):
    backend = FakeBackend(table)
    config = SearchConfig(**{"beam_width": 2, "beam_expand": 3, "max_depth": 3, **cfg})
    problems = problems or [Problem("p0", "q0", "5")]
    trees, stats = beam_search(problems, SearchEnv(backend, FakeFormat(), config, None, FakeGrader(), value_fn), progress=False)
    return trees, stats, backend


def last_steps(batch):
    return [r.prompt.split("\n")[-2] for r in batch]


# --- tests ----------------------------------------------------------------------------------------
def test_keeps_the_top_b1_candidates_by_value():
    value_fn = score_by_text({".0": 0.1, ".1": 0.7, ".2": 0.4, ".1.0": 0.2, ".1.1": 0.3, ".2.2": 0.9})
    trees, _, backend = search(value_fn=value_fn)
    assert last_steps(backend.batches[0]) == ["Q: q0"]
    assert backend.batches[0][0].n == 3
    assert sorted(last_steps(backend.batches[1])) == [".1", ".2"]  # .0 (0.1) dropped
    assert sorted(last_steps(backend.batches[2])) == [".1.1", ".2.2"]  # best 2 of 6
    assert len(backend.batches) == 3
    tree = trees[0]
    assert {n.text: n.prior for n in tree.children(tree.root)} == {".0": 0.1, ".1": 0.7, ".2": 0.4}
    assert all(n.prior is not None for n in tree.nodes[1:] if not n.is_terminal)  # scored when searched
    # Depth 3 is max_depth: the last candidates are too_deep dead ends, no beam finishes.
    assert {n.terminal for n in tree.nodes if n.depth == 3} == {"too_deep"}
    assert trees[0].meta["rollouts"] == 0 and trees[0].meta["method"] == "beam"
    assert [len(c) for c in value_fn.calls] == [3, 6]  # depth-3 children are terminal: not scored


def test_answers_finish_beams_and_shrink_the_width():
    table = {"": ["a", "b", "\\boxed{5}"], "a": ["a1", "a2"], "a1": ["\\boxed{7}"]}
    value_fn = score_by_text({"a": 0.1, "b": -0.5, "\\boxed{5}": 0.8, "a1": 0.3, "a2": 0.2, "\\boxed{7}": 0.9})
    trees, stats, backend = search(table, value_fn, beam_width=2, max_depth=5)
    tree = trees[0]
    # Depth 1: \boxed{5} (0.8) finishes and a (0.1) continues, so one place is left: a1 beats a2.
    assert [last_steps(b) for b in backend.batches] == [["Q: q0"], ["a"], ["a1"]]
    finished = sorted((n.answer, n.correct, n.prior) for n in tree.answered())
    assert finished == [("5", True, 0.8), ("7", False, 0.9)]
    assert tree.meta["rollouts"] == 2 and stats.rollouts == 2
    assert (tree.root.visits, tree.root.value_sum) == (2, 0.0)  # graded outcomes recorded as backups


def test_all_problems_share_each_batch():
    problems = [Problem(f"p{i}", f"q{i}", "5") for i in range(3)]
    value_fn = score_by_text({})
    _, stats, backend = search(value_fn=value_fn, problems=problems, beam_width=2, beam_expand=2)
    assert [len(b) for b in backend.batches] == [3, 6, 6]  # 1 root each, then B1 = 2 beams each
    assert all(r.n == 2 for b in backend.batches for r in b)
    assert (stats.batches, stats.requests, stats.problems) == (3, 15, 3)
    assert stats.generated_tokens == 2 * 2 * 15


@pytest.mark.filterwarnings("ignore:beam search without a value_fn")
def test_without_value_fn_warns_and_picks_seeded_random_candidates():
    with pytest.warns(UserWarning, match="without a value_fn"):
        a, _, backend_a = search()
    _, _, backend_b = search()
    assert [last_steps(x) for x in backend_a.batches] == [last_steps(x) for x in backend_b.batches]
    assert len(set(last_steps(backend_a.batches[2]))) == 2 and all(n.prior is None for n in a[0].nodes)
    picks = {s for seed in range(6) for s in last_steps(search(seed=seed)[2].batches[2])}
    assert len(picks) > 2  # the choice depends on the seed, not on sampling order


def test_run_search_routes_beam():
    backend = FakeBackend()
    cfg = SearchConfig(beam_width=1, beam_expand=2, max_depth=2)
    trees, _ = run_search("beam", [Problem("p0", "q0", "5")],
                          SearchEnv(backend, FakeFormat(), cfg, None, FakeGrader(), score_by_text({})), progress=False)
    assert trees[0].meta["method"] == "beam" and [len(b) for b in backend.batches] == [1, 1]
