"""Evaluation method names: what each one means and which generation run it needs.

Methods that only differ in how they pick from independent samples (maj@k, pass@k, ppm-bon@k,
ppm-vote@k) name the same generation, so one best-of-N run serves them all and "PPM best-of-8
beats majority vote" compares choices over the very same 8 samples.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# rStar-Math's evaluation: 64 independent searches, a vote over the top 4 answers by PPM score.
MCTS_SEARCHES = 64
MCTS_TOP = 4

FORMS: tuple[tuple[str, str], ...] = (
    ("greedy", "one solution at temperature 0"),
    ("maj@K", "majority vote over K samples"),
    ("pass@K", "oracle: right when any of K samples is (an upper bound, not a method)"),
    ("ppm-bon@K", "best of K samples by PPM score, minimum over steps (Math-Shepherd)"),
    ("ppm-bon-last@K", "best of K samples by the PPM score of the last step"),
    ("ppm-vote@K", "vote over K samples weighted by PPM score (minimum over steps; -last for last step)"),
    ("beam-B1xB2", "step beam search SBS(B1, B2) guided by the PPM"),
    ("mcts[@S[-topT]]", f"S MCTS searches with the PPM (default {MCTS_SEARCHES}), vote over the top T "
                        f"answers by PPM (default {MCTS_TOP})"),
    ("offline-q|offline-visits|offline-ppm", "re-select from saved trees by Q, by visits or by PPM score"),
)

SAMPLING_KINDS = ("maj", "pass", "ppm-bon", "ppm-vote")
PPM_KINDS = ("ppm-bon", "ppm-vote", "beam", "mcts")


@dataclass(frozen=True)
class MethodSpec:
    name: str  # canonical spelling; also the records' file name
    kind: str  # greedy | maj | pass | ppm-bon | ppm-vote | beam | mcts | offline
    k: int = 1  # samples, for the sampling kinds
    agg: str = "min"  # how PPM step scores make a solution's score: min | last
    beam: tuple[int, int] = (1, 1)  # (B1, B2)
    searches: int = MCTS_SEARCHES
    top: int = MCTS_TOP
    select_by: str = ""  # offline: q | visits | ppm

    @property
    def generation(self) -> str:
        """The run this method reads; methods naming the same run share it."""
        if self.kind in SAMPLING_KINDS:
            return "samples"
        if self.kind == "beam":
            return f"beam-{self.beam[0]}x{self.beam[1]}"
        if self.kind == "mcts":
            return f"mcts@{self.searches}"
        return self.kind  # greedy, offline

    @property
    def needs_ppm(self) -> bool:
        return self.kind in PPM_KINDS or self.select_by == "ppm"


def valid_forms() -> str:
    return "\n".join(f"  {form:38s} {what}" for form, what in FORMS)


def _error(text: str, why: str) -> ValueError:
    return ValueError(f"{why} {text!r}; valid methods (K, B1, B2, S, T positive integers):\n{valid_forms()}")


_PATTERNS = (
    (re.compile(r"greedy"), lambda m: MethodSpec("greedy", "greedy")),
    (re.compile(r"(maj|pass)@(\d+)"), lambda m: MethodSpec(f"{m[1]}@{m[2]}", m[1], k=int(m[2]))),
    (
        re.compile(r"ppm-(bon|vote)(?:-(min|last))?@(\d+)"),
        lambda m: MethodSpec(
            f"ppm-{m[1]}{'-last' if m[2] == 'last' else ''}@{m[3]}", f"ppm-{m[1]}", k=int(m[3]), agg=m[2] or "min"
        ),
    ),
    (re.compile(r"beam-(\d+)x(\d+)"), lambda m: MethodSpec(m[0], "beam", beam=(int(m[1]), int(m[2])))),
    (re.compile(r"mcts(?:@(\d+)(?:-top(\d+))?)?"), lambda m: _mcts(int(m[1] or MCTS_SEARCHES), int(m[2] or MCTS_TOP))),
    (re.compile(r"offline-(q|visits|ppm)"), lambda m: MethodSpec(m[0], "offline", select_by=m[1])),
)


def _mcts(searches: int, top: int) -> MethodSpec:
    name = "mcts" if (searches, top) == (MCTS_SEARCHES, MCTS_TOP) else f"mcts@{searches}"
    if top != MCTS_TOP:
        name += f"-top{top}"
    return MethodSpec(name, "mcts", searches=searches, top=top)


def parse_method(text: str) -> MethodSpec:
    """A method spec from its name ("maj@8", "ppm-bon-last@8", "beam-3x5", "mcts@16", ...)."""
    clean = text.strip().lower()
    for pattern, build in _PATTERNS:
        match = pattern.fullmatch(clean)
        if match:
            if any(int(g) < 1 for g in match.groups() if g and g.isdigit()):
                raise _error(text, "counts must be at least 1 in")
            return build(match)
    raise _error(text, "unknown method")


def parse_methods(methods: str | Iterable[str | MethodSpec]) -> list[MethodSpec]:
    """Specs from a comma list or a sequence; duplicates (same canonical name) are dropped."""
    items = methods.split(",") if isinstance(methods, str) else list(methods)
    specs: dict[str, MethodSpec] = {}
    for item in items:
        if isinstance(item, str) and not item.strip():
            continue
        spec = item if isinstance(item, MethodSpec) else parse_method(item)
        specs.setdefault(spec.name, spec)
    if not specs:
        raise _error(str(methods), "no method in")
    return list(specs.values())
