"""PPM pair construction on hand-made trees: exactly which pairs, with which texts and filters."""

import random

import pytest

from evomath.config import PPMConfig
from evomath.files import read_jsonl
from evomath.formats import make_format
from evomath.scoring import ppm_text
from evomath.tree import Tree, write_trees
from training import TrainingInputError
from training.ppm_pairs import (
    build_pairs,
    capped_levenshtein,
    edit_distance_at_least,
    make_pairs,
    pair_counts_by_depth,
)

FMT = make_format("natural")
NO_FILTER = PPMConfig(min_q_margin=0.0, min_edit_distance=0)


def step(tree, parent, text, q=None, **fields):
    """A child whose Q is exactly ``q`` (one visit); ``q=None`` leaves it unvisited."""
    node = tree.add_child(parent, text, **fields)
    if q is not None:
        node.visits, node.value_sum = 1, q
    return node


def answer(tree, parent, text, q, correct):
    return step(tree, parent, text, q, terminal="answer", answer="7" if correct else "8", correct=correct)


def mixed_tree() -> Tree:
    """Root children: 3 leading to correct answers, 3 only to failures, one never visited.

    root ─ A (0.6) ─ A1 correct (1.0), A2 wrong (-1.0)
         ─ B (0.2) ─ B1 correct (1.0)
         ─ F (0.4) ─ F1 correct (0.8)
         ─ C (-1.0) ─ C1 wrong (-1.0)
         ─ D (-0.2) ─ D1 too deep (-1.0)
         ─ G (-0.6) ─ G1 wrong (-0.6)
         ─ U (unvisited, nothing below)
    """
    tree = Tree("mixed", "Tom has 3 pens and buys 4. How many?", "7")
    a = step(tree, tree.root, "A: Tom starts with three pens.\n\n", 0.6)
    answer(tree, a, "A1: three plus four is \\boxed{7}", 1.0, True)
    answer(tree, a, "A2: three times four is \\boxed{12}", -1.0, False)
    b = step(tree, tree.root, "B: He buys four more pens today.\n\n", 0.2)
    answer(tree, b, "B1: so he has \\boxed{7} pens", 1.0, True)
    f = step(tree, tree.root, "F: Add the bought pens to the old.\n\n", 0.4)
    answer(tree, f, "F1: the total is \\boxed{7}", 0.8, True)
    c = step(tree, tree.root, "C: Subtract the pens he gave away.\n\n", -1.0)
    answer(tree, c, "C1: three minus four is \\boxed{-1}", -1.0, False)
    d = step(tree, tree.root, "D: Let us think about pencils instead.\n\n", -0.2)
    step(tree, d, "D1: and pencils again, forever", -1.0, terminal="too_deep")
    g = step(tree, tree.root, "G: Multiply the pens by the price.\n\n", -0.6)
    answer(tree, g, "G1: that gives \\boxed{0}", -0.6, False)
    step(tree, tree.root, "U: An idea nobody followed up on.\n\n")
    return tree


def first_word(text: str) -> str:
    """The step's label; a later step's text starts with the separator the PPM text moved off its prompt."""
    return text.split(":")[0].lstrip("\n")


def summary(rows):
    return [(first_word(r["chosen"]), first_word(r["rejected"]), r["depth"], r["final"]) for r in rows]


def test_step_pairs_top_two_correct_against_bottom_two_failing_then_final_pairs():
    rows = build_pairs([mixed_tree()], FMT, NO_FILTER)
    assert summary(rows) == [
        # root: correct-leading A (0.6), F (0.4) against only-failing C (-1.0), G (-0.6); B, D and U left out
        ("A", "C", 1, False), ("A", "G", 1, False), ("F", "C", 1, False), ("F", "G", 1, False),
        # node A: its two answers
        ("A1", "A2", 2, False),
        # final step: correct trajectories A→A1 (avg 0.8), F→F1 (0.6) against wrong C→C1 (-1.0), G→G1 (-0.6)
        ("A", "C", 2, True), ("A", "G", 2, True), ("F", "C", 2, True), ("F", "G", 2, True),
    ]
    assert [r["q_chosen"] for r in rows] == pytest.approx([0.6, 0.6, 0.4, 0.4, 1.0, 0.8, 0.8, 0.6, 0.6])
    assert [r["q_rejected"] for r in rows] == pytest.approx([-1.0, -0.6, -1.0, -0.6, -1.0, -1.0, -0.6, -1.0, -0.6])
    assert {r["problem_id"] for r in rows} == {"mixed"}


def test_prompts_share_the_prefix_and_prompt_plus_step_is_the_scorers_text():
    tree = mixed_tree()
    rows = build_pairs([tree], FMT, NO_FILTER)
    question = tree.question
    a, a1, a2 = tree.nodes[1], tree.nodes[2], tree.nodes[3]
    at_a = rows[4]
    assert at_a["prompt"] == ppm_text(question, a.text)
    assert at_a["prompt"] + at_a["chosen"] == ppm_text(question, FMT.trajectory([a.text, a1.text]))
    assert at_a["prompt"] + at_a["rejected"] == ppm_text(question, FMT.trajectory([a.text, a2.text]))
    assert at_a["prompt"] == ppm_text(question, a.text.rstrip())  # the separator goes with the next step
    assert at_a["chosen"] == "\n\n" + a1.text
    final = rows[5]
    assert final["prompt"] == ppm_text(question, "")
    assert final["chosen"] == a.text + a1.text
    assert all(row["prompt"] == ppm_text(question, "") for row in rows[:4])


def test_code_format_builds_the_same_way():
    fmt, tree = make_format("code"), mixed_tree()
    rows = build_pairs([tree], fmt, NO_FILTER)
    steps = [tree.nodes[1].text, tree.nodes[2].text]
    assert rows[4]["prompt"] + rows[4]["chosen"] == ppm_text(tree.question, fmt.trajectory(steps))


def test_all_correct_or_all_wrong_trees_give_no_pairs():
    easy = Tree("easy", "q", "7")
    for name in ("first correct path", "second correct path"):
        s = step(easy, easy.root, name, 0.5)
        answer(easy, s, f"{name} ends \\boxed{{7}}", 1.0, True)
    hard = Tree("hard", "q", "7")
    for name in ("first wrong path here", "second wrong path there"):
        s = step(hard, hard.root, name, -1.0)
        answer(hard, s, f"{name} ends \\boxed{{8}}", -1.0, False)
    assert build_pairs([easy, hard], FMT, NO_FILTER) == []


@pytest.mark.parametrize("kind", ["too_deep", "code_errors", "no_step", "length"])
def test_dead_ends_are_never_rejected_steps(kind):
    """rStar's negatives lead to wrong answers; a dead end has Q = -1 exactly and would otherwise
    always sort as the lowest-Q sibling (an empty candidate gave a rejected text "")."""
    tree = Tree("p", "q", "7")
    good = step(tree, tree.root, "good start of a solution", 0.0)
    answer(tree, good, "good end \\boxed{7}", 1.0, True)
    step(tree, tree.root, "", -1.0, terminal=kind)
    step(tree, tree.root, "a branch that loops forever and ever", -1.0, terminal=kind)
    ended = step(tree, tree.root, "a branch that stops without saying", -1.0)
    step(tree, ended, "and so on.", -1.0, terminal="answer", answer=None, correct=False)  # no answer given
    wrong = step(tree, tree.root, "a wrong turn taken at the start", -0.5)
    answer(tree, wrong, "wrong end \\boxed{8}", -1.0, False)
    rows = build_pairs([tree], FMT, NO_FILTER)
    assert summary(rows) == [
        ("good start of a solution", "a wrong turn taken at the start", 1, False),
        (good.text + "good end \\boxed{7}", wrong.text + "wrong end \\boxed{8}", 2, True),
    ]
    assert all(row["rejected"].strip() for row in rows)


def test_failing_code_is_never_the_chosen_side():
    """A right answer after a traceback is no positive: not at its step, not as a whole trajectory;
    a failing step that leads to a wrong answer is a fine negative."""
    tree = Tree("p", "q", "7")
    broken = step(tree, tree.root, "x = 3 +  # broken code here", 1.0, code_error=True, consecutive_errors=1)
    answer(tree, broken, "lucky end \\boxed{7}", 1.0, True)
    clean = step(tree, tree.root, "x = 3 + 4 computed cleanly", 0.0)
    answer(tree, clean, "clean end \\boxed{7}", 1.0, True)
    answer(tree, clean, "slip at the end \\boxed{9}", -1.0, False)
    failing_wrong = step(tree, tree.root, "y = 3 * 4 # and crash later", -1.0, code_error=True, consecutive_errors=1)
    answer(tree, failing_wrong, "crashed end \\boxed{12}", -1.0, False)
    rows = build_pairs([tree], FMT, NO_FILTER)
    chosen = {first_word(r["chosen"]) for r in rows}
    assert not any("broken" in r["chosen"] or "lucky" in r["chosen"] for r in rows)
    assert summary(rows)[0] == ("x = 3 + 4 computed cleanly", "y = 3 * 4 # and crash later", 1, False)
    assert "x = 3 + 4 computed cleanly" in chosen or "clean end \\boxed{7}" in chosen
    final = [r for r in rows if r["final"]]
    assert final and all(r["chosen"].startswith("x = 3 + 4") for r in final)


def test_q_margin_filter():
    rows = build_pairs([mixed_tree()], FMT, PPMConfig(min_q_margin=1.25, min_edit_distance=0))
    # margins: A-C 1.6, A-G 1.2, F-C 1.4, F-G 1.0, A1-A2 2.0; final 1.8, 1.4, 1.6, 1.2
    assert summary(rows) == [
        ("A", "C", 1, False), ("F", "C", 1, False), ("A1", "A2", 2, False),
        ("A", "C", 2, True), ("A", "G", 2, True), ("F", "C", 2, True),
    ]


def test_edit_distance_filter_drops_near_duplicate_steps():
    tree = Tree("p", "q", "7")
    s = step(tree, tree.root, "start", 0.0)
    answer(tree, s, "so the answer is \\boxed{7}", 1.0, True)
    answer(tree, s, "so the answer is \\boxed{8}", -1.0, False)
    far = answer(tree, s, "I have no idea what the question asks, so \\boxed{8}", -0.8, False)
    rows = build_pairs([tree], FMT, PPMConfig(min_q_margin=0.0, min_edit_distance=20))
    # The one-character sibling goes, at the step and as a whole trajectory; the distant one stays.
    assert [(r["rejected"], r["final"]) for r in rows] == [(far.text, False), (s.text + far.text, True)]


def test_pair_counts_by_depth():
    rows = build_pairs([mixed_tree()], FMT, NO_FILTER)
    assert pair_counts_by_depth(rows) == {"1": 4, "2": 1, "final": 4}
    assert pair_counts_by_depth([]) == {}


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j - 1] + (ca != cb), prev[j] + 1, cur[j - 1] + 1))
        prev = cur
    return prev[-1]


def test_capped_levenshtein_matches_the_full_dynamic_programme():
    rng = random.Random(0)
    for _ in range(300):
        a = "".join(rng.choice("abc") for _ in range(rng.randint(0, 30)))
        b = "".join(rng.choice("abc") for _ in range(rng.randint(0, 30)))
        cap = rng.randint(1, 25)
        exact = levenshtein(a, b)
        assert capped_levenshtein(a, b, cap) == min(exact, cap), (a, b, cap)
        assert edit_distance_at_least(a, b, cap) == (exact >= cap)


def test_make_pairs_writes_rows_with_their_format_and_refuses_none(tmp_path):
    write_trees(tmp_path / "trees.jsonl", [mixed_tree()])
    summary_ = make_pairs(tmp_path / "trees.jsonl", tmp_path / "pairs.jsonl", FMT, NO_FILTER)
    rows = list(read_jsonl(tmp_path / "pairs.jsonl"))
    assert summary_["pairs"] == len(rows) == 9 and summary_["by_depth"] == {"1": 4, "2": 1, "final": 4}
    assert {r["format"] for r in rows} == {"natural"}
    capped = NO_FILTER.model_copy(update={"max_pairs": 5})
    summary_ = make_pairs(tmp_path / "trees.jsonl", tmp_path / "capped.jsonl", FMT, capped)
    kept = list(read_jsonl(tmp_path / "capped.jsonl"))
    assert (summary_["pairs"], summary_["pairs_built"], len(kept)) == (5, 9, 5)
    assert all(row in rows for row in kept)  # a sample of the same pairs, in file order
    assert [rows.index(row) for row in kept] == sorted(rows.index(row) for row in kept)
    easy = Tree("easy", "q", "7")
    answer(easy, easy.root, "right \\boxed{7}", 1.0, True)
    write_trees(tmp_path / "easy.jsonl", [easy])
    with pytest.raises(TrainingInputError, match="no PPM pair from 1 trees"):
        make_pairs(tmp_path / "easy.jsonl", tmp_path / "none.jsonl", FMT, NO_FILTER)
    assert not (tmp_path / "none.jsonl").exists()
