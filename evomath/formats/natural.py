"""Plain natural-language steps, one paragraph each, separated by a blank line (Math-Shepherd and
the search-and-learn recipes); the last step holds the final answer in ``\\boxed{}``."""

from __future__ import annotations

import re
from collections.abc import Sequence

from evomath.formats.base import ParsedStep, PromptedFormat
from evomath.grading import last_boxed

SEPARATOR = "\n\n"

INSTRUCTION = (
    "Solve the math problem step by step. Write each step as one short paragraph and leave a blank "
    "line between steps. In the last step, write the final answer as \\boxed{ANSWER}."
)

EXAMPLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Janet has 3 boxes with 12 pencils in each box. She gives away 9 pencils. "
        "How many pencils does she have left?",
        (
            "Janet has 3 boxes with 12 pencils in each box, so she has 3 * 12 = 36 pencils.\n\n",
            "She gives away 9 pencils, so she has 36 - 9 = 27 pencils left.\n\n",
            "The answer is \\boxed{27}.",
        ),
    ),
    (
        "Two fair six-sided dice are rolled. What is the probability that the sum of the numbers "
        "rolled is 7? Express your answer as a common fraction.",
        (
            "There are 6 * 6 = 36 equally likely outcomes.\n\n",
            "The outcomes with a sum of 7 are (1, 6), (2, 5), (3, 4), (4, 3), (5, 2) and (6, 1), "
            "which is 6 outcomes.\n\n",
            "So the probability is 6/36 = 1/6.\n\n",
            "The answer is \\boxed{\\frac{1}{6}}.",
        ),
    ),
)


_STATED = re.compile(r"answer is:?\s*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)


def stated_answer(text: str) -> str | None:
    """"The answer is 17" in a final step without a box, the GSM8K convention."""
    found = _STATED.findall(text)
    return found[-1].replace(",", "") if found else None


class NaturalFormat(PromptedFormat):
    name = "natural"
    stop = (SEPARATOR,)
    instruction = INSTRUCTION
    examples = EXAMPLES
    bare_suffix = "Let's think step by step.\n"
    chat_suffix = ""
    answer_prefix = "The answer is \\boxed{"  # how the examples' last step opens
    steps_in_one_request = True

    def parse_step(self, completion_text: str, finish_reason: str) -> ParsedStep | None:
        """A paragraph; final when it holds a boxed answer or the model stopped on its own.
        A step cut off by the length limit without a box is still a step: the search decides."""
        text = completion_text
        if not text.strip():
            return None
        answer = last_boxed(text)
        ended = finish_reason != "length" and not text.endswith(SEPARATOR)
        if answer is None and ended:
            answer = stated_answer(text)
        if answer is not None or ended:
            return ParsedStep(text, is_final=True, answer=answer)
        return ParsedStep(text)

    def program(self, steps: Sequence[str]) -> str:
        return ""

    def with_output(self, step_text: str, output: str) -> str:
        return step_text
