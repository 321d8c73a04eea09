"""What a step format is, and the prompt handling every format shares.

A step's text is exactly what the engine returned for it, stop marker included, so a solution is
the plain concatenation of its steps: ``continuation = prompt + "".join(steps)`` and ``split``
inverts the join the way generation with the format's stops would have cut it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from evomath.errors import InputError

PROMPT_STYLES = ("few_shot", "bare", "chat", "chat_few_shot")
# What the policy is fine-tuned on for each generation style: rStar drops the few-shot examples.
TRAINING_STYLE = {"few_shot": "bare", "bare": "bare", "chat": "chat", "chat_few_shot": "chat"}
ChatFn = Callable[[str], str]


@dataclass
class ParsedStep:
    text: str  # text to store as the node's step (end marker kept)
    code: str | None = None  # new code in this step (code format), else None
    ends_code: bool = False  # <end_of_code>: run the program, append its <output>, then ask for the answer
    is_final: bool = False  # the solution is complete (answer found or model ended)
    answer: str | None = None  # final answer when is_final


class StepFormat(Protocol):
    name: str
    prompt_style: str
    stop: tuple[str, ...]

    def prompt(self, question: str) -> str: ...
    def continuation(self, question: str, steps: Sequence[str]) -> str: ...
    def parse_step(self, completion_text: str, finish_reason: str) -> ParsedStep | None: ...
    def program(self, steps: Sequence[str]) -> str: ...
    def with_output(self, step_text: str, output: str) -> str: ...
    def render(self, question: str, steps: Sequence[str]) -> tuple[str, str]: ...
    def trajectory(self, steps: Sequence[str]) -> str: ...
    def split(self, solution: str) -> list[str]: ...


def split_on_stops(text: str, stops: Sequence[str]) -> list[str]:
    """Cut text after each earliest stop, as generation with include_stop=True would."""
    pieces = []
    while text:
        hits = [(i, s) for s in stops if (i := text.find(s)) >= 0]
        if not hits:
            pieces.append(text)
            break
        i, s = min(hits)
        pieces.append(text[: i + len(s)])
        text = text[i + len(s) :]
    return pieces


class PromptedFormat:
    """Prompt styles shared by the formats.

    few_shot: instruction, worked examples, then the bare prompt. bare: rStar's wrap
    ("<|user|>:\\n{q}\\n<|assistant|>: ...") ending where the solution starts, for models fine-tuned
    on it. chat: instruction and question through the tokenizer's chat template. chat_few_shot:
    the same with worked examples in the user turn (bootstrapping instruct models).
    """

    name: str
    stop: tuple[str, ...]
    instruction: str  # what the few-shot and chat prompts ask for
    examples: tuple[tuple[str, tuple[str, ...]], ...]  # (question, step texts) worked in the format
    bare_suffix: str  # after "<|assistant|>: " in the bare wrap
    chat_suffix: str  # after the chat template's generation prompt
    answer_prefix: str | None = None  # opens a forced final step (SearchConfig.force_final_answer)
    # No code runs between steps, so one request may write several and ``split`` cut them apart
    # (Expander.steps_per_request).
    steps_in_one_request: bool = False

    def __init__(self, prompt_style: str = "few_shot", chat: ChatFn | None = None):
        if prompt_style not in PROMPT_STYLES:
            raise InputError(f"prompt_style must be one of {PROMPT_STYLES}, got {prompt_style!r}")
        if prompt_style.startswith("chat") and chat is None:
            raise ValueError(f"prompt_style {prompt_style!r} needs chat=, a function applying the chat template")
        self.prompt_style = prompt_style
        self.chat = chat

    @property
    def training_style(self) -> str:
        """SFT data drops the few-shot examples (as rStar does); chat stays chat."""
        return TRAINING_STYLE[self.prompt_style]

    def styled_prompt(self, question: str, style: str) -> str:
        if style == "bare":
            return f"<|user|>:\n{question}\n<|assistant|>: {self.bare_suffix}"
        if style == "chat":
            return self.chat(f"{question}\n\n{self.instruction}") + self.chat_suffix
        if style == "chat_few_shot":
            # Worked examples inside the one user turn: small instruct models follow them better
            # than they follow the instruction alone (the bootstrap round's prompt).
            shots = "".join(f"Question: {q}\nSolution:\n{self.trajectory(steps)}\n\n\n" for q, steps in self.examples)
            return self.chat(f"{self.instruction}\n\nExamples:\n\n{shots}Question: {question}\nSolution:") + self.chat_suffix
        shots = "".join(
            self.styled_prompt(q, "bare") + self.trajectory(steps) + "\n\n\n" for q, steps in self.examples
        )
        return f"{self.instruction}\n\n\n{shots}{self.styled_prompt(question, 'bare')}"

    def prompt(self, question: str) -> str:
        return self.styled_prompt(question, self.prompt_style)

    def continuation(self, question: str, steps: Sequence[str]) -> str:
        return self.prompt(question) + "".join(steps)

    def render(self, question: str, steps: Sequence[str]) -> tuple[str, str]:
        """(prompt, completion) for SFT; the completion is the steps as generated, final marker included."""
        return self.styled_prompt(question, self.training_style), self.trajectory(steps)

    def trajectory(self, steps: Sequence[str]) -> str:
        return "".join(steps)

    def split(self, solution: str) -> list[str]:
        return split_on_stops(solution, self.stop)
