"""Step formats: how a solution is cut into steps, prompted, parsed and rendered for training."""

from __future__ import annotations

from evomath.errors import InputError
from evomath.formats.base import PROMPT_STYLES, TRAINING_STYLE, ChatFn, ParsedStep, StepFormat, split_on_stops
from evomath.formats.code_cot import CodeFormat
from evomath.formats.natural import NaturalFormat

FORMATS = {"code": CodeFormat, "natural": NaturalFormat}


def make_format(name: str, prompt_style: str = "few_shot", chat: ChatFn | None = None) -> StepFormat:
    """A step format by name ("code" | "natural"); chat applies a chat template (backend.chat_prompt)."""
    if name not in FORMATS:
        raise InputError(f"unknown step format {name!r}; valid: {', '.join(FORMATS)}")
    return FORMATS[name](prompt_style, chat)


__all__ = ["FORMATS", "PROMPT_STYLES", "TRAINING_STYLE", "ParsedStep", "StepFormat", "make_format", "split_on_stops"]
