"""Step formats: prompts, step parsing, programs, and exact render/split round trips."""

from __future__ import annotations

import contextlib
import io

import pytest

from evomath.formats import ParsedStep, make_format
from evomath.formats.code_cot import CodeFormat
from evomath.formats.natural import NaturalFormat
from evomath.grading import answers_equal, last_boxed


def chat(user: str) -> str:
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def run(program: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(program, {})
    return out.getvalue().strip()


# --- construction and prompts -----------------------------------------------------------------


def test_make_format():
    assert isinstance(make_format("code"), CodeFormat)
    assert isinstance(make_format("natural", "bare"), NaturalFormat)
    with pytest.raises(ValueError, match="code, natural"):
        make_format("latex")
    with pytest.raises(ValueError, match="prompt_style"):
        make_format("code", "zero_shot")
    with pytest.raises(ValueError, match="chat="):
        make_format("natural", "chat")


def test_stops():
    assert make_format("code").stop == ("<end_of_step>", "<end_of_code>", "<end_of_answer>")
    assert make_format("natural").stop == ("\n\n",)


def test_code_prompts():
    q = "What is 2 + 3?"
    bare = make_format("code", "bare").prompt(q)
    assert bare == f"<|user|>:\n{q}\n<|assistant|>: Let's think step by step and solve the problem with code.<code>\n"
    few = make_format("code").prompt(q)
    assert few.endswith(bare) and few.count("<end_of_answer>") == 1 + 2  # instruction + two examples
    assert "<end_of_step>" in few.split("<|user|>")[0]
    chatted = make_format("code", "chat", chat).prompt(q)
    assert chatted.startswith("<|im_start|>user\nWhat is 2 + 3?\n\n") and chatted.endswith("<|im_start|>assistant\n<code>\n")


def test_natural_prompts():
    q = "What is 2 + 3?"
    bare = make_format("natural", "bare").prompt(q)
    assert bare == f"<|user|>:\n{q}\n<|assistant|>: Let's think step by step.\n"
    few = make_format("natural").prompt(q)
    assert few.endswith(bare) and few.count("\\boxed{") == 3  # instruction + two examples
    assert make_format("natural", "chat", chat).prompt(q).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("name", ["code", "natural"])
def test_render_drops_few_shot_examples_but_keeps_chat(name):
    fmt, chatted = make_format(name), make_format(name, "chat", chat)
    q, steps = fmt.examples[0]
    prompt, completion = fmt.render(q, steps)
    assert prompt == make_format(name, "bare").prompt(q)
    assert completion == "".join(steps)
    assert chatted.render(q, steps)[0] == chatted.prompt(q)
    assert fmt.continuation(q, steps[:2]) == fmt.prompt(q) + steps[0] + steps[1]


# --- the worked examples are right ------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1])
def test_code_examples_run_and_agree(index):
    fmt = make_format("code")
    _, steps = fmt.examples[index]
    printed = run(fmt.program(steps))
    shown = steps[-2].split("<output>")[1].split("<end_of_output>")[0]
    assert printed == shown
    parsed = fmt.parse_step(steps[-1], "stop")
    assert parsed.is_final and answers_equal(parsed.answer, printed)


def test_natural_examples_match_code_examples():
    code, natural = make_format("code"), make_format("natural")
    for (qc, sc), (qn, sn) in zip(code.examples, natural.examples):
        assert qc == qn
        assert last_boxed(sc[-1]) == last_boxed(sn[-1])


# --- code format parsing ----------------------------------------------------------------------


def test_code_parse_step_kinds():
    fmt = make_format("code")
    step = fmt.parse_step("# Step 1: add\nx = 1 + 2\n<end_of_step>", "stop")
    assert step == ParsedStep("# Step 1: add\nx = 1 + 2\n<end_of_step>", code="# Step 1: add\nx = 1 + 2")
    end = fmt.parse_step("\n# Step 2: print\nprint(x)\n<end_of_code>", "stop")
    assert end.ends_code and not end.is_final and end.code == "# Step 2: print\nprint(x)"
    ans = fmt.parse_step("<answer>So it is \\boxed{\\frac{1}{2}}.<end_of_answer>", "stop")
    assert ans.is_final and ans.answer == "\\frac{1}{2}" and ans.code is None
    plain = fmt.parse_step("<answer>3<end_of_answer>", "stop")
    assert plain.is_final and plain.answer == "3"
    cut = fmt.parse_step("<answer>The answer is 4", "length")
    assert cut.is_final and cut.answer is None
    assert fmt.parse_step("", "stop") is None and fmt.parse_step(" \n ", "length") is None


def test_code_parse_truncated_and_eos():
    fmt = make_format("code")
    cut = fmt.parse_step("# Step 1: long\nx = [1, 2,", "length")
    assert not cut.is_final and cut.code == "# Step 1: long\nx = [1, 2,"
    eos = fmt.parse_step("# I am done \\boxed{5}", "stop")
    assert eos.is_final and eos.answer == "5"


def test_code_program_and_output():
    fmt = make_format("code")
    steps = ["# Step 1\nx = 2\n<end_of_step>", "\nfor i in range(3):\n<end_of_step>", "\n    x += i\nprint(x)\n<end_of_code>"]
    assert run(fmt.program(steps)) == "5"
    node = fmt.with_output(steps[-1], "5\n")
    assert node == steps[-1] + "\n<output>5<end_of_output>\n"
    answer = "<answer>\\boxed{5}<end_of_answer>"
    assert fmt.program(steps[:2] + [node, answer]) == fmt.program(steps)
    assert fmt.parse_step(node, "stop").ends_code


def test_code_split_round_trip():
    fmt = make_format("code")
    for q, steps in fmt.examples:
        prompt, completion = fmt.render(q, steps)
        assert fmt.split(completion) == list(steps)
        parsed = [fmt.parse_step(s, "stop") for s in fmt.split(completion)]
        assert [p.ends_code for p in parsed] == [False, False, True, False]
        assert parsed[-1].is_final and parsed[-1].answer == last_boxed(steps[-1])
        assert prompt + completion == make_format("code", "bare").continuation(q, steps)
        assert completion.endswith("<end_of_answer>")


# --- natural format parsing -------------------------------------------------------------------


def test_natural_parse_step():
    fmt = make_format("natural")
    step = fmt.parse_step("Tom has 12 + 5 = 17 pens.\n\n", "stop")
    assert step == ParsedStep("Tom has 12 + 5 = 17 pens.\n\n")
    final = fmt.parse_step("The answer is \\boxed{17}.\n\n", "stop")
    assert final.is_final and final.answer == "17"
    eos = fmt.parse_step("So he has 17 pens.", "stop")
    assert eos.is_final and eos.answer is None
    cut = fmt.parse_step("He has 12 + 5 = ", "length")
    assert not cut.is_final
    assert fmt.parse_step("\n\n", "stop") is None and fmt.parse_step("", "length") is None
    assert fmt.program(["a\n\n"]) == "" and fmt.with_output("a\n\n", "x") == "a\n\n"


def test_natural_split_round_trip():
    fmt = make_format("natural")
    for q, steps in fmt.examples:
        _, completion = fmt.render(q, steps)
        assert fmt.split(completion) == list(steps)
        parsed = [fmt.parse_step(s, "stop") for s in steps]
        assert [p.is_final for p in parsed] == [False] * (len(steps) - 1) + [True]
    assert fmt.split("a\n\n\nb\n\n") == ["a\n\n", "\nb\n\n"]  # as generation with the stop cuts it
