"""Evaluation on scripted trees, a scripted policy and a fake PPM: method names, votes, PPM
aggregation, beam and MCTS choices, offline re-selection, records, the table, plots, the CLI's
refusals, and that sampling methods share one best-of-N run."""

from __future__ import annotations

import json
import re

import pytest
from search_fakes import Step

from deployments.cli import main
from evaluation import (
    evaluate,
    evaluate_suite,
    flat_metrics,
    format_table,
    parse_method,
    parse_methods,
    plot_rounds,
    summarize,
)
from evaluation.report import plot_accuracy_vs_tokens
from evaluation.select import Solution, choose_beam, choose_mcts, choose_offline, choose_samples, majority
from evomath.backends.base import Completion, GenerationResult
from evomath.config import SearchConfig
from evomath.files import read_jsonl
from evomath.problems import Problem
from evomath.tree import Tree, read_trees

PNG = b"\x89PNG\r\n\x1a\n"


# --- scripted trees ------------------------------------------------------------------------------
def add_chain(tree, steps, answer, gold="5", parent=None):
    """A path of (text, score) steps below ``parent`` (the root), the last one an answer."""
    node = parent or tree.root
    for text, score in steps:
        node = tree.add_child(node, text, prior=score, num_tokens=10)
    node.terminal, node.answer, node.correct = "answer", answer, answer == gold
    return node


def sampled(*chains):
    """A best-of-N tree: each chain is ([step scores], answer)."""
    tree = Tree("p0", "q0", "5")
    for scores, answer in chains:
        add_chain(tree, [(f"step {i}", s) for i, s in enumerate(scores)], answer)
    return tree


def pick(method, tree):
    return choose_samples(parse_method(method), tree).selected


# --- method names --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, name, kind, generation",
    [
        ("greedy", "greedy", "greedy", "greedy"),
        ("maj@8", "maj@8", "maj", "samples"),
        ("pass@4", "pass@4", "pass", "samples"),
        ("PPM-bon@8", "ppm-bon@8", "ppm-bon", "samples"),
        ("ppm-bon-min@8", "ppm-bon@8", "ppm-bon", "samples"),
        ("ppm-bon-last@8", "ppm-bon-last@8", "ppm-bon", "samples"),
        ("ppm-vote@4", "ppm-vote@4", "ppm-vote", "samples"),
        ("PRM+Arithmetic-bon-min@8", "prm+arithmetic-bon@8", "prm+arithmetic-bon", "samples"),
        ("ppm+arithmetic-vote-last@4", "ppm+arithmetic-vote-last@4", "ppm+arithmetic-vote", "samples"),
        ("arithmetic-bon@8", "arithmetic-bon@8", "arithmetic-bon", "samples"),
        ("beam-3x5", "beam-3x5", "beam", "beam-3x5"),
        ("mcts", "mcts", "mcts", "mcts@64"),
        ("mcts@64", "mcts", "mcts", "mcts@64"),
        ("mcts@16", "mcts@16", "mcts", "mcts@16"),
        ("mcts@16-top2", "mcts@16-top2", "mcts", "mcts@16"),
        ("offline-visits", "offline-visits", "offline", "offline"),
    ],
)
def test_parse_method(text, name, kind, generation):
    spec = parse_method(text)
    assert (spec.name, spec.kind, spec.generation) == (name, kind, generation)


def test_parse_method_settings():
    assert parse_method("beam-3x5").beam == (3, 5)
    assert parse_method("ppm-bon@8").agg == "min" and parse_method("ppm-vote-last@8").agg == "last"
    mcts = parse_method("mcts")
    assert (mcts.searches, mcts.top) == (64, 4)  # rStar's evaluation
    assert [s.name for s in parse_methods("greedy, maj@8,,maj@8,ppm-bon-min@8")] == ["greedy", "maj@8", "ppm-bon@8"]
    gated, rule = parse_method("prm+arithmetic-vote@8"), parse_method("arithmetic-bon-last@8")
    assert (gated.reward_model, gated.gate, gated.scored_by, gated.select_by) == ("prm", "arithmetic", "prm+arithmetic",
                                                                                  "vote")
    assert (rule.reward_model, rule.needs_ppm, rule.scored_by, rule.agg) == (None, False, "arithmetic", "last")
    assert not parse_method("maj@8").needs_ppm and parse_method("beam-1x5").needs_ppm
    assert parse_method("offline-ppm").needs_ppm and not parse_method("offline-q").needs_ppm


@pytest.mark.parametrize("bad", ["foo", "maj", "maj@0", "beam-3", "beam-0x5", "mcts@0", "ppm-bon@", "offline-x", "",
                                 "ppm+prm-bon@8", "arithmetic+ppm-bon@8", "ppm+arithmetic-bon@0"])
def test_parse_method_errors_list_valid_forms(bad):
    with pytest.raises(ValueError) as err:
        parse_methods(bad)
    message = str(err.value)
    for form in ("greedy", "maj@K", "ppm-bon@K", "ppm-vote@K", "beam-B1xB2", "mcts[@S[-topT]]", "offline-q"):
        assert form in message


# --- votes and PPM aggregation -------------------------------------------------------------------
def test_majority_groups_equal_answers():
    sols = [Solution(a, a == "0.5", 2) for a in ("3", "0.5", "1/2", "3", "\\frac{1}{2}")]
    assert majority(sols).answer == "0.5"  # 3 spellings of one half beat two 3s
    assert majority([]) is None


def test_majority_tie_goes_to_first_group():
    sols = [Solution("7", False, 1), Solution("5", True, 1), Solution("5", True, 1), Solution("7", False, 1)]
    assert majority(sols).answer == "7"
    assert majority(sols[1:] + sols[:1]).answer == "5"


def test_ppm_bon_min_step_against_last_step():
    # chain A: a confident last step after a very bad one (wrong); chain B: steady (right).
    tree = sampled(([0.9, -0.8, 0.95], "7"), ([0.5, 0.4, 0.6], "5"))
    assert pick("ppm-bon-last@2", tree).answer == "7"
    assert pick("ppm-bon@2", tree).answer == "5"  # Math-Shepherd's minimum
    assert pick("ppm-bon@1", tree).answer == "7"  # only the first sample


def test_ppm_weighted_vote_against_majority():
    low, high = ([0.2, -0.9], "7"), ([0.9, 0.8], "5")
    tree = sampled(low, low, high, low, high)
    assert pick("maj@5", tree).answer == "7"
    assert pick("ppm-vote@5", tree).answer == "5"  # 2 x 0.9 > 3 x 0.05
    assert pick("ppm-bon@5", tree).answer == "5"
    # last-step weights: 3 x (-0.9 -> 0.05) against 2 x (0.8 -> 0.9)
    assert pick("ppm-vote-last@5", tree).answer == "5"


def test_unanswered_chains_are_not_candidates():
    tree = sampled(([0.1], "7"))
    dead = tree.add_child(tree.root, "??", num_tokens=3)
    dead.terminal = "no_step"
    boxless = add_chain(tree, [("the end", 0.99)], "5")
    boxless.answer = None  # ended without a \boxed{}
    choice = choose_samples(parse_method("ppm-bon@3"), tree)
    assert [s.answer for s in choice.candidates] == ["7"] and choice.selected.answer == "7"


def test_pass_at_k_and_first_k_samples():
    tree = sampled(([0.1], "7"), ([0.1], "7"), ([0.1], "5"))
    assert not choose_samples(parse_method("pass@2"), tree).any_correct
    three = choose_samples(parse_method("pass@3"), tree)
    assert three.any_correct and three.selected.correct
    assert not choose_samples(parse_method("maj@3"), tree).selected.correct


def test_unscored_solution_refuses_a_ppm_choice():
    tree = sampled(([None], "5"))
    with pytest.raises(ValueError, match="no PPM scores"):
        pick("ppm-bon@1", tree)


def test_beam_picks_among_finished_beams_only():
    tree = Tree("p0", "q0", "5")
    finished = add_chain(tree, [("a", 0.3), ("b", 0.4)], "5")
    dropped = add_chain(tree, [("c", 0.1), ("d", 0.9)], "7")  # scored, but lost its beam slot
    tree.meta["beam_finished"] = [finished.id]
    choice = choose_beam(tree)
    assert choice.selected.answer == "5" and len(choice.candidates) == 1
    tree.meta["beam_finished"] = [finished.id, dropped.id]
    assert choose_beam(tree).selected.answer == "7"


def test_mcts_best_per_search_then_vote_over_top():
    def search(*answers):
        tree = Tree("p0", "q0", "5")
        for answer, score in answers:
            add_chain(tree, [("s", 0.0), (f"box {answer}", score)], answer)
        return tree

    trees = [
        search(("9", 0.99), ("5", 0.2)),  # best of this search: 9 (the top score of all)
        search(("5", 0.8), ("9", -0.5)),
        search(("5", 0.7)),
        search(("8", 0.6)),
        search(("9", 0.1)),  # fifth best pick: outside the top 4
        search(),  # a search that found no answer
    ]
    choice = choose_mcts(parse_method("mcts@6"), trees)
    assert choice.selected.answer == "5" and len(choice.candidates) == 7
    # with the top 1 only, the single best pick wins
    assert choose_mcts(parse_method("mcts@6-top1"), trees).selected.answer == "9"


# --- offline re-selection ------------------------------------------------------------------------
def offline_tree():
    """Root -> A (3 visits, Q -1/3) -> answer 7; B (1 visit, Q 1) -> answer 5; C (Q 1, dead end)."""
    tree = Tree("p0", "q0", "5")
    a = tree.add_child(tree.root, "A")
    b = tree.add_child(tree.root, "B")
    c = tree.add_child(tree.root, "C", visits=5, value_sum=5.0)
    dead = tree.add_child(c, "??", visits=1, value_sum=-1.0)
    dead.terminal = "no_step"
    seven = add_chain(tree, [("A1", None)], "7", parent=a)
    five = add_chain(tree, [("B1", None)], "5", parent=b)
    for node, values in ((seven, [1.0, -1.0, -1.0]), (five, [1.0])):
        for v in values:
            tree.backup(node, v)
    return tree, seven, five


def test_offline_by_q_and_by_visits():
    tree, _, _ = offline_tree()
    by_q = choose_offline(parse_method("offline-q"), [tree])
    by_visits = choose_offline(parse_method("offline-visits"), [tree])
    assert by_q.selected.answer == "5"  # C has the best Q but no answer below
    assert by_visits.selected.answer == "7"
    assert len(by_q.candidates) == 2 and by_q.any_correct


def test_offline_by_ppm_and_across_trees():
    tree, seven, five = offline_tree()
    spec = parse_method("offline-ppm")
    assert choose_offline(spec, [tree], {(0, seven.id): 0.9, (0, five.id): 0.1}).selected.answer == "7"
    assert choose_offline(spec, [tree], {(0, seven.id): 0.1, (0, five.id): 0.2}).selected.answer == "5"
    other = Tree("p0", "q0", "5")  # a second search: more visits (8 > 3), lower Q (0.25 < 1)
    busy = add_chain(other, [("X", None)], "8")
    for v in [1.0] * 5 + [-1.0] * 3:
        other.backup(busy, v)
    assert choose_offline(parse_method("offline-visits"), [tree, other]).selected.answer == "8"
    assert choose_offline(parse_method("offline-q"), [tree, other]).selected.answer == "5"
    assert choose_offline(parse_method("offline-q"), []).selected is None


# --- records and the table -----------------------------------------------------------------------
def record(method, correct, any_correct, solutions, steps, tokens, seconds, benchmark="b"):
    return dict(benchmark=benchmark, method=method, problem_id="p", gold="5", answer="5", correct=correct,
                any_correct=any_correct, solutions=solutions, steps=steps, tokens=tokens, seconds=seconds)


def test_summarize_columns_and_table():
    records = [
        record("greedy", True, True, 1, 3, 100, 1.0),
        record("greedy", False, False, 1, 5, 300, 1.0),
        record("maj@8", True, True, 8, 4, 800, 2.0),
        record("maj@8", False, True, 6, 2, 600, 2.0),
    ]
    rows = summarize(records)
    assert [r["method"] for r in rows] == ["greedy", "maj@8"]
    maj = rows[1]
    low, high = maj.pop("accuracy_low"), maj.pop("accuracy_high")
    assert (low, high) == pytest.approx((0.0945, 0.9055), abs=1e-4)  # Wilson's 95% interval of 1 in 2
    assert maj == dict(benchmark="b", method="maj@8", problems=2, accuracy=0.5, seconds_per_question=2.0,
                       avg_steps=3.0, avg_solutions=7.0, tokens_per_question=700.0, pass_at_k=1.0)
    rows[1] |= {"accuracy_low": low, "accuracy_high": high}
    table = format_table(rows).splitlines()
    assert table[0].split() == ["benchmark", "method", "n", "accuracy", "95%", "s/question", "steps", "solutions",
                                "tokens/q", "pass@k"]
    assert table[3].split() == ["b", "maj@8", "2", "50.0%", "[9.5%,90.5%]", "2.00", "3.0", "7.0", "700", "100.0%"]
    assert len({len(line) for line in table[:2]}) == 1  # header as wide as the rule
    metrics = flat_metrics(rows)
    assert metrics["b/maj_at_8/accuracy"] == 0.5 and metrics["b/greedy/pass_at_k"] == 0.5 and len(metrics) == 18
    assert metrics["b/maj_at_8/accuracy_low"] == low


def test_plots_are_pngs(tmp_path):
    rows = summarize([record(m, c, c, 1, 2, t, 1.0, benchmark=b)
                      for b in ("b1", "b2") for m, c, t in (("greedy", True, 50), ("maj@4", False, 200), ("maj@8", True, 400))])
    path = plot_accuracy_vs_tokens(rows, tmp_path / "a" / "acc.png")
    assert path.read_bytes().startswith(PNG)
    rounds = [{"round": k, "summary": rows, "buckets": {"easy": k, "medium": 2, "hard": 5 - k},
               "minutes": {"generate": 2.0 + k, "train_policy": 1.5}} for k in (1, 2)]
    assert plot_rounds(rounds, tmp_path / "rounds.png").read_bytes().startswith(PNG)
    assert plot_rounds([{"round": 1, "summary": rows}], tmp_path / "r1.png").read_bytes().startswith(PNG)


# --- evaluate() on a scripted policy -------------------------------------------------------------
class FakeFormat:
    name = "fake"
    stop = ("\n",)

    def continuation(self, question, steps):
        return f"Q: {question}\n" + "".join(s + "\n" for s in steps)

    def parse_step(self, text, finish_reason):
        boxed = re.search(r"\\boxed\{([^}]*)\}", text)
        return Step(text, is_final=boxed is not None, answer=boxed.group(1) if boxed else None)


ANSWERS = "75757757"  # the answer below first step s<i>: majority 7, but the PPM likes 5


class FakeBackend:
    """First steps s0, s1, ...; below s<i> the answer ANSWERS[i]. Records every request."""

    def __init__(self):
        self.requests = []

    def generate(self, requests, progress=False):
        self.requests += requests
        out = []
        for req in requests:
            last = req.prompt.rstrip("\n").split("\n")[-1]
            texts = self.first_steps(req.n) if last.startswith("Q: ") else [self.answer_below(last)] * req.n
            out.append(GenerationResult([Completion(t, len(t), "stop") for t in texts], 5))
        return out

    def first_steps(self, n):
        return [f"s{i}" for i in range(n)]

    def answer_below(self, step):
        return f"so \\boxed{{{ANSWERS[int(step[1:]) % len(ANSWERS)]}}}"


class FakeGrader:
    def grade_many(self, pairs):
        return [pred == gold for pred, gold in pairs]


class FakePPM:
    """Likes answers of 5 and the first steps that lead to them. Counts its calls."""

    def __init__(self):
        self.calls = 0

    def score(self, items):
        self.calls += 1
        return [self.one(steps[-1]) for _, steps in items]

    @staticmethod
    def one(step):
        if "boxed" in step:
            return 0.8 if "{5}" in step else -0.5
        return 0.3 if ANSWERS[int(step[1:])] == "5" else 0.1


PROBLEMS = [Problem("p0", "q0", "5"), Problem("p1", "q1", "5")]
CONFIG = SearchConfig(rollouts=2, n_candidates=3, max_depth=4, concurrent_problems=8)


def run_eval(methods, tmp_path, scorer=None, backend=None, **kwargs):
    backend = backend or FakeBackend()
    records = evaluate(PROBLEMS, methods, backend, FakeFormat(), CONFIG, None, FakeGrader(), scorer, tmp_path,
                       benchmark="demo", progress=False, **kwargs)
    return records, backend


def by_method(records):
    out = {}
    for r in records:
        out.setdefault(r["method"], []).append(r)
    return out


def test_sampling_methods_share_one_best_of_n_run(tmp_path):
    ppm = FakePPM()
    methods = "maj@4,maj@8,pass@8,ppm-bon@8,ppm-bon-last@8,ppm-vote@8"
    records, backend = run_eval(methods, tmp_path, ppm)
    roots = [r for r in backend.requests if r.prompt.rstrip("\n").split("\n")[-1].startswith("Q: ")]
    assert sorted(r.n for r in roots) == [8, 8]  # one 8-sample root request per problem, for all methods
    assert ppm.calls == 1  # every step of every chain scored in one call
    got = by_method(records)
    assert [r["correct"] for r in got["maj@8"]] == [False, False]  # 7 is the majority answer
    assert [r["correct"] for r in got["ppm-bon@8"]] == [True, True]
    assert [r["correct"] for r in got["ppm-vote@8"]] == [True, True]
    assert all(r["any_correct"] for r in got["pass@8"])
    assert got["maj@8"][0]["solutions"] == 8 and got["maj@4"][0]["solutions"] == 4
    assert got["maj@4"][0]["tokens"] * 2 == got["maj@8"][0]["tokens"] > 0
    assert got["maj@4"][0]["seconds"] * 2 == pytest.approx(got["maj@8"][0]["seconds"], abs=1e-5)
    assert got["maj@8"][0]["steps"] == 2.0
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jsonl"))
    assert files == sorted([f"demo/{m}.jsonl" for m in methods.split(",")] + ["trees/samples@8/demo.jsonl"])
    saved = list(read_trees(tmp_path / "trees/samples@8/demo.jsonl"))
    assert [t.problem_id for t in saved] == ["p0", "p1"] and all(n.prior is not None for n in saved[0].nodes[1:])
    assert [r["problem_id"] for r in read_jsonl(tmp_path / "demo/maj@8.jsonl")] == ["p0", "p1"]


class ContraryPRM(FakePPM):
    """Dislikes what the PPM likes."""

    def score(self, items):
        return [-s for s in super().score(items)]


def test_several_reward_models_verify_the_very_same_samples(tmp_path):
    ppm, prm = FakePPM(), ContraryPRM()
    records, backend = run_eval("maj@8,ppm-bon@8,prm-bon@8,prm-vote@8", tmp_path, {"ppm": ppm, "prm": prm})
    roots = [r for r in backend.requests if r.prompt.rstrip("\n").split("\n")[-1].startswith("Q: ")]
    assert sorted(r.n for r in roots) == [8, 8]  # one generation for every verifier
    assert (ppm.calls, prm.calls) == (1, 1)
    got = by_method(records)
    assert [r["correct"] for r in got["ppm-bon@8"]] == [True, True]
    assert [r["correct"] for r in got["prm-bon@8"]] == [False, False]  # the contrary verifier, same candidates
    assert got["ppm-bon@8"][0]["solutions"] == got["prm-bon@8"][0]["solutions"] == 8
    saved = list(read_trees(tmp_path / "trees/samples@8/demo.jsonl"))
    assert set(saved[0].meta["scores"]) == {"ppm", "prm"}
    with pytest.raises(ValueError, match=r"value-bon@8 need a VALUE \(--reward-model value=DIR\)"):
        run_eval("value-bon@8", tmp_path, {"ppm": ppm})


class ArithmeticBackend(FakeBackend):
    """Five of eight first steps get 2 + 3 wrong ("= 7"), three right; the answer follows the step."""

    def first_steps(self, n):
        return [f"2 + 3 = {7 if i % 3 else 5}" for i in range(n)]

    def answer_below(self, step):
        return f"so \\boxed{{{step.rsplit(' ', 1)[-1]}}}"


class LikesSeven(FakePPM):
    def score(self, items):
        self.calls += 1
        return [0.9 if "7" in steps[-1] else 0.5 for _, steps in items]


def test_a_reward_model_behind_the_arithmetic_rule_ranks_only_what_the_rule_lets_through(tmp_path):
    """ppm+arithmetic-bon: the model's favourite breaks an equation, so the rule stops it and the
    model's best among the rest wins; the rule alone serves as a verifier without any model."""
    problems = [Problem("p0", "Tom has 2 pens and gets 3 more. How many pens?", "5")]
    natural = CONFIG.model_copy(update={"step_format": "natural"})
    ppm = LikesSeven()
    methods = "maj@8,ppm-bon@8,ppm+arithmetic-bon@8,ppm+arithmetic-vote@8,arithmetic-bon@8"
    records = by_method(evaluate(problems, methods, ArithmeticBackend(), FakeFormat(), natural, None, FakeGrader(),
                                 ppm, tmp_path, benchmark="demo", progress=False))
    assert ppm.calls == 1  # the gated methods reuse the model's one scoring
    assert {m: r[0]["correct"] for m, r in records.items()} == {
        "maj@8": False, "ppm-bon@8": False, "ppm+arithmetic-bon@8": True, "ppm+arithmetic-vote@8": True,
        "arithmetic-bon@8": True}
    saved = next(iter(read_trees(tmp_path / "trees/samples@8/demo.jsonl")))
    assert set(saved.meta["scores"]) == {"ppm", "arithmetic", "ppm+arithmetic"}
    assert {round(n.prior, 3) for n in saved.nodes[1:]} == {0.9, 0.5}  # the priors are the model's own
    with pytest.raises(ValueError, match=r"ppm\+arithmetic-bon@8 read natural-language steps, not code steps"):
        run_eval("maj@8,ppm+arithmetic-bon@8", tmp_path, ppm)  # CONFIG's steps are code
    with pytest.raises(ValueError, match=r"prm\+arithmetic-bon@8 need a PRM"):
        evaluate(problems, "prm+arithmetic-bon@8", ArithmeticBackend(), FakeFormat(), natural, None, FakeGrader(), ppm,
                 tmp_path, benchmark="demo", progress=False)


def test_a_plain_value_fn_serves_as_the_ppm(tmp_path):
    ppm = FakePPM()
    records, _ = run_eval("maj@8,ppm-bon@8", tmp_path, ppm.score)  # a callable, as RewardScorer is
    assert ppm.calls == 1 and [r["correct"] for r in by_method(records)["ppm-bon@8"]] == [True, True]


def test_greedy_beam_mcts_and_offline(tmp_path):
    ppm = FakePPM()
    records, backend = run_eval("greedy,beam-2x3,mcts@3,mcts@3-top1,offline-q,offline-ppm", tmp_path, ppm)
    got = by_method(records)
    assert [r["answer"] for r in got["greedy"]] == ["7", "7"]  # s0 leads to 7
    assert any(r.temperature == 0 for r in backend.requests)
    assert [r["answer"] for r in got["beam-2x3"]] == ["5", "5"] and got["beam-2x3"][0]["solutions"] <= 2
    assert [r["correct"] for r in got["mcts@3"]] == [True, True]
    assert got["mcts@3"][0]["tokens"] > got["greedy"][0]["tokens"]
    assert [r["correct"] for r in got["offline-ppm"]] == [True, True]
    mcts_trees = list(read_trees(tmp_path / "trees/mcts@3/demo.jsonl"))
    assert len(mcts_trees) == 6 and {t.problem_id for t in mcts_trees} == {"p0", "p1"}
    assert sorted(t.meta["search"] for t in mcts_trees) == [0, 0, 1, 1, 2, 2]
    assert got["offline-q"][0]["tokens"] == got["mcts@3"][0]["tokens"]  # the trees' cost
    # offline again, later, from the saved trees and with no policy at all
    again, _ = run_eval("offline-q", tmp_path / "again", backend=object(), trees=tmp_path / "trees/mcts@3")
    assert [r["answer"] for r in again] == [r["answer"] for r in got["offline-q"]]


def test_evaluate_refuses_missing_inputs(tmp_path):
    with pytest.raises(ValueError, match="ppm-bon@4, mcts need a process preference model"):
        run_eval("greedy,ppm-bon@4,mcts", tmp_path)
    with pytest.raises(ValueError, match="offline methods re-select from saved trees"):
        run_eval("offline-q", tmp_path)
    with pytest.raises(FileNotFoundError, match="no saved trees"):
        run_eval("offline-q", tmp_path, trees=tmp_path / "nowhere")


def test_evaluate_suite_writes_summary_and_plot(tmp_path):
    suite = {"one": PROBLEMS[:1], "two": PROBLEMS}
    rows = evaluate_suite(suite, "greedy,maj@4", FakeBackend(), FakeFormat(), CONFIG, None, FakeGrader(),
                          out_dir=tmp_path, progress=False)
    assert [(r["benchmark"], r["method"], r["problems"]) for r in rows] == [
        ("one", "greedy", 1), ("one", "maj@4", 1), ("two", "greedy", 2), ("two", "maj@4", 2)]
    assert json.loads((tmp_path / "summary.json").read_text()) == rows
    assert (tmp_path / "accuracy_vs_tokens.png").read_bytes().startswith(PNG)


def test_greedy_runs_on_every_problem_the_sampled_methods_on_a_subset(tmp_path):
    problems = [Problem(f"p{i}", f"q{i}", "5") for i in range(8)]
    suite = {"held-out": problems, "phrasing": problems[:6]}
    backend = FakeBackend()
    rows = evaluate_suite(suite, "greedy,maj@4,pass@4", backend, FakeFormat(), CONFIG, None, FakeGrader(),
                          out_dir=tmp_path, progress=False, sampled_limit=3, seed=1, greedy_only=["phrasing"])
    assert [(r["benchmark"], r["method"], r["problems"]) for r in rows] == [
        ("held-out", "greedy", 8), ("held-out", "maj@4", 3), ("held-out", "pass@4", 3), ("phrasing", "greedy", 6)]
    greedy = {r["problem_id"] for r in read_jsonl(tmp_path / "held-out" / "greedy.jsonl")}
    sampled_ids = [r["problem_id"] for r in read_jsonl(tmp_path / "held-out" / "maj@4.jsonl")]
    assert sampled_ids == [r["problem_id"] for r in read_jsonl(tmp_path / "held-out" / "pass@4.jsonl")]
    assert set(sampled_ids) < greedy  # the same subset for both sampled methods, inside greedy's problems
    assert all(r["accuracy_low"] <= r["accuracy"] <= r["accuracy_high"] for r in rows)


def test_method_groups():
    from evaluation.run import method_groups

    specs = parse_methods("greedy,maj@8,mcts@2,offline-q")
    problems = list(range(10))
    assert method_groups(specs, problems) == [(specs, problems)]
    assert method_groups(specs, problems, sampled_limit=10) == [(specs, problems)]
    (greedy, everything), (rest, some) = method_groups(specs, problems, sampled_limit=4)
    assert greedy == specs[:1] and everything == problems and rest == specs[1:] and len(some) == 4
    assert method_groups(specs[1:], problems, sampled_limit=4) == [(specs[1:], some)]
    assert [[m.name for m in g] for g, _ in method_groups(specs[1:], problems, greedy_only=True)] == [["greedy"]]


# --- the command line refuses bad input before starting an engine --------------------------------
def test_cli_unknown_benchmark_and_method(capsys):
    assert main(["evaluate", "--benchmark", "nope", "--methods", "greedy"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'nope'" in err and "math500" in err and "demo_test" in err
    assert main(["evaluate", "--benchmark", "demo_test", "--methods", "greedy,majority"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'majority'" in err and "ppm-bon@K" in err


def test_cli_refuses_a_policy_as_ppm(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    code = main(["evaluate", "--benchmark", "demo_test", "--limit", "2", "--methods", "ppm-bon@4", "--ppm", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "is not an evomath PPM" in err and "LlamaForCausalLM" in err


def test_cli_needs_a_ppm_for_ppm_methods(capsys):
    assert main(["evaluate", "--benchmark", "demo_test", "--limit", "2", "--methods", "greedy,beam-2x2"]) == 2
    assert "beam-2x2 need a process preference model (--ppm DIR)" in capsys.readouterr().err


def test_choose_charges_only_the_samples_used(tmp_path):
    from evaluation.runs import Run

    tree = sampled(([0.1, 0.1], "7"), ([0.1], "5"), ([0.1], "5"))
    run = Run("samples@3", [[tree]], seconds=3.0, samples=3)
    choice, tokens = parse_method("maj@2").choose(run, 0)
    assert tokens == 30 and len(choice.candidates) == 2


class BoxingBackend:
    """Every step is a final answer of 3."""

    def generate(self, requests, progress=False):
        return [GenerationResult([Completion("So the answer is \\boxed{3}.", 8, "stop")] * r.n, 20) for r in requests]

    def chat_prompt(self, text, system=None):
        return text


def test_evaluate_models_is_the_stage(tmp_path, monkeypatch, caplog):
    from evaluation.run import evaluate_models
    from evomath import engines
    from evomath.config import EvalConfig, ExperimentConfig

    asked = []
    monkeypatch.setattr(engines, "get_backend", lambda model, cfg: asked.append(model) or BoxingBackend())
    config = ExperimentConfig(
        eval=EvalConfig(benchmarks=["demo_test"], methods=["greedy", "maj@2", "ppm-bon@2"], limit=2),
        eval_search=SearchConfig(step_format="natural", n_samples=2),
    )
    metrics = evaluate_models(config, "some-policy", None, tmp_path)
    assert asked == ["some-policy"] and "skipping ppm-bon@2" in caplog.text
    assert {k for k in metrics if k.endswith("/accuracy")} == {"demo_test/greedy/accuracy", "demo_test/maj_at_2/accuracy"}
    assert metrics["demo_test/maj_at_2/avg_solutions"] == 2.0
    assert json.loads((tmp_path / "summary.json").read_text())[0]["problems"] == 2
    assert metrics["artifacts"]["plot"] == str(tmp_path / "accuracy_vs_tokens.png")


def test_evaluate_models_takes_each_methods_problem_count_from_the_config(tmp_path, monkeypatch):
    from evaluation.run import evaluate_models
    from evomath import engines
    from evomath.config import EvalConfig, ExperimentConfig

    monkeypatch.setattr(engines, "get_backend", lambda model, cfg: BoxingBackend())
    config = ExperimentConfig(
        eval=EvalConfig(benchmarks=["demo_test:1-2"], greedy_benchmarks=["demo_phrasing:1-2"],
                        methods=["greedy", "maj@2"], limit=12, sampled_limit=4),
        eval_search=SearchConfig(step_format="natural", n_samples=2),
    )
    metrics = evaluate_models(config, "some-policy", None, tmp_path)
    assert metrics["demo_test:1-2/greedy/problems"] == 12 and metrics["demo_test:1-2/maj_at_2/problems"] == 4
    assert metrics["demo_phrasing:1-2/greedy/problems"] == 12 and "demo_phrasing:1-2/maj_at_2/problems" not in metrics
    assert metrics["demo_test:1-2/greedy/accuracy_high"] > metrics["demo_test:1-2/greedy/accuracy"]


def test_a_benchmark_is_greedy_only_or_not():
    from evomath.config import EvalConfig

    with pytest.raises(ValueError, match="in benchmarks already"):
        EvalConfig(benchmarks=["demo_test"], greedy_benchmarks=["demo_test"])
