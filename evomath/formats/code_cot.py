"""rStar-Math's code-augmented chain of thought.

Each step is reasoning written as Python comments plus the code for it, ending ``<end_of_step>``;
the last code step prints the result and ends ``<end_of_code>``. The search runs the program, stores
``with_output(step, output)`` as that node's text, and asks for the answer step
``<answer>... \\boxed{X}<end_of_answer>``. A solution, as the model writes it after the prompt::

    # Step 1: ...            (the prompt ends with "<code>\\n")
    x = 3 * 12
    <end_of_step>
    # Step 2: ...
    print(x)
    <end_of_code>
    <output>36<end_of_output>
    <answer>... \\boxed{36}<end_of_answer>
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from evomath.formats.base import ParsedStep, PromptedFormat, split_on_stops
from evomath.grading import last_boxed

CODE = "<code>"
END_STEP = "<end_of_step>"
END_CODE = "<end_of_code>"
OUTPUT = "<output>"
END_OUTPUT = "<end_of_output>"
ANSWER = "<answer>"
END_ANSWER = "<end_of_answer>"

_OUTPUT_BLOCK = re.compile(re.escape(OUTPUT) + r".*?" + re.escape(END_OUTPUT), re.DOTALL)

INSTRUCTION = (
    "You are a helpful assistant that solves math problems step by step with Python code. "
    "Each step starts with comments that explain the reasoning, followed by the code for that step, "
    f"and ends with {END_STEP}. The last step prints the result and ends with {END_CODE}. "
    f"The program's output then appears between {OUTPUT} and {END_OUTPUT}, and you give the final "
    f"answer in \\boxed{{}} between {ANSWER} and {END_ANSWER}."
)

EXAMPLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Janet has 3 boxes with 12 pencils in each box. She gives away 9 pencils. "
        "How many pencils does she have left?",
        (
            f"# Step 1: Find the number of pencils in the 3 boxes.\ntotal_pencils = 3 * 12\n{END_STEP}",
            f"\n# Step 2: Take away the 9 pencils she gives away.\npencils_left = total_pencils - 9\n{END_STEP}",
            f"\n# Step 3: Print the final answer.\nprint(pencils_left)\n{END_CODE}\n{OUTPUT}27{END_OUTPUT}\n",
            f"{ANSWER}Janet has 27 pencils left, so the answer is \\boxed{{27}}.{END_ANSWER}",
        ),
    ),
    (
        "Two fair six-sided dice are rolled. What is the probability that the sum of the numbers "
        "rolled is 7? Express your answer as a common fraction.",
        (
            "# Step 1: Count the ordered outcomes whose sum is 7.\n"
            f"favourable = sum(1 for a in range(1, 7) for b in range(1, 7) if a + b == 7)\n{END_STEP}",
            "\n# Step 2: There are 6 * 6 = 36 equally likely outcomes; keep the probability exact.\n"
            f"from fractions import Fraction\nprobability = Fraction(favourable, 6 * 6)\n{END_STEP}",
            f"\n# Step 3: Print the final answer.\nprint(probability)\n{END_CODE}\n{OUTPUT}1/6{END_OUTPUT}\n",
            f"{ANSWER}The probability is \\boxed{{\\frac{{1}}{{6}}}}.{END_ANSWER}",
        ),
    ),
)


def step_code(step_text: str) -> str:
    """The Python in one step: markers and any appended output removed, comments kept."""
    text = _OUTPUT_BLOCK.sub("", step_text.split(ANSWER, 1)[0])
    for marker in (CODE, END_STEP, END_CODE):
        text = text.replace(marker, "")
    return text.strip("\n")


class CodeFormat(PromptedFormat):
    name = "code"
    stop = (END_STEP, END_CODE, END_ANSWER)
    instruction = INSTRUCTION
    examples = EXAMPLES
    bare_suffix = f"Let's think step by step and solve the problem with code.{CODE}\n"
    chat_suffix = f"{CODE}\n"

    def parse_step(self, completion_text: str, finish_reason: str) -> ParsedStep | None:
        text = completion_text
        if not text.strip():
            return None
        if ANSWER in text:
            body, closed = text.split(ANSWER, 1)[1], END_ANSWER in text
            body = body.split(END_ANSWER, 1)[0]
            answer = last_boxed(body) or (body.strip() if closed else None) or None
            return ParsedStep(text, is_final=True, answer=answer)
        if END_CODE in text:  # also a stored node text, with its <output> appended
            return ParsedStep(text, code=step_code(text), ends_code=True)
        if text.rstrip().endswith(END_STEP) or finish_reason == "length":
            return ParsedStep(text, code=step_code(text))
        # The model stopped on its own without a marker: the solution ends here.
        return ParsedStep(text, is_final=True, answer=last_boxed(text))

    def program(self, steps: Sequence[str]) -> str:
        codes = [step_code(s) for s in steps if ANSWER not in s]
        return "\n".join(c for c in codes if c.strip())

    def with_output(self, step_text: str, output: str) -> str:
        return f"{step_text}\n{OUTPUT}{output.strip()}{END_OUTPUT}\n"

    def split(self, solution: str) -> list[str]:
        """Steps as generated; an <output> block belongs to the <end_of_code> step before it."""
        pieces = split_on_stops(solution, self.stop)
        for i, piece in enumerate(pieces):
            if piece.endswith(END_CODE) and i + 1 < len(pieces):
                m = re.match(r"\n?" + re.escape(OUTPUT) + r".*?" + re.escape(END_OUTPUT) + r"\n?", pieces[i + 1], re.DOTALL)
                if m:
                    pieces[i] += m.group(0)
                    pieces[i + 1] = pieces[i + 1][m.end() :]
        return [p for p in pieces if p]
