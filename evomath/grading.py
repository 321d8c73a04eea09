"""Answer extraction, grading and vote keys.

Grading is two-tiered: cheap string and number checks decide most answers in-process; the rest go
to math-verify. An answer that states an equation is judged by what it asserts first: one whose
sides disagree (``\boxed{7 = 42}``, ``1+1 = 42``) is wrong whatever the gold (the rule is written
out above :func:`_chains`). math-verify times out with ``signal.alarm``, which only works on a main thread and
cannot interrupt C code, so the :class:`Grader` runs it in worker processes that it kills and
replaces when an answer overruns its time. A timeout or a crash counts as wrong and never raises.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

# ---------------------------------------------------------------------------------------------
# Extraction and normalisation


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox``), braces balanced; None if absent or cut off."""
    if not text:
        return None
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest = text[start:]
    rest = rest[len("\\boxed") :] if rest.startswith("\\boxed") else rest[len("\\fbox") :]
    if rest.startswith(" ") and not rest.lstrip().startswith("{"):
        token = re.match(r"\s+([^\s$]+)", rest)  # "\boxed 5"
        return token.group(1).rstrip(".") if token else None
    rest = rest.lstrip()
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i]
    return None


_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox|textnormal)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,;:! ]|\\left|\\right|\\displaystyle")
_BARE_PI = re.compile(r"(?<![\\A-Za-z])pi(?![A-Za-z])")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_LEADING_ZEROS = re.compile(r"^([+-]?)0+(?=\d)")


def normalize_answer(answer: str) -> str:
    """Cheap canonical spelling: the fast path and the vote key rest on it."""
    s = answer.strip()
    boxed = last_boxed(s)
    if boxed is not None:
        s = boxed
    s = _TEXT_CMD.sub(r"\1", s)
    s = s.replace("\\$", "").replace("$", "")
    s = _SPACING.sub("", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\s+", "", s).rstrip(".")
    s = _BARE_PI.sub(r"\\pi", s)
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    return _LEADING_ZEROS.sub(r"\1", s)


_INT_OR_DEC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")
_SLASH = re.compile(r"^([+-]?\d+)/(\d+)$")
_LATEX_FRAC = re.compile(r"^([+-]?)\\frac(?:\{([+-]?\d+)\}\{(\d+)\}|(\d)(\d))$")


def _as_number(s: str) -> tuple[Fraction, bool] | None:
    """(value, is_decimal) for a plain integer, decimal, a/b or \\frac{a}{b}; else None."""
    if len(s) > 60:
        return None
    try:
        if _INT_OR_DEC.match(s):
            return Fraction(s), "." in s
        if m := _SLASH.match(s):
            return Fraction(int(m.group(1)), int(m.group(2))), False
        if m := _LATEX_FRAC.match(s):
            num, den = (m.group(2), m.group(3)) if m.group(2) is not None else (m.group(4), m.group(5))
            value = Fraction(int(num), int(den))
            return (-value if m.group(1) == "-" else value), False
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _numbers_equal(a: tuple[Fraction, bool], b: tuple[Fraction, bool]) -> bool:
    """Exact for integers and fractions; a decimal matches to 6 places, as math-verify does."""
    if a[0] == b[0]:
        return True
    if a[1] or b[1]:
        return round(float(a[0]), 6) == round(float(b[0]), 6)
    return False


MAX_ANSWER_CHARS = 1000
MAX_BRACE_DEPTH = 30


def _braces_ok(text: str) -> bool:
    """Balanced and not absurdly deep (deep nesting sends the LaTeX parser into minutes).
    Escaped braces are delimiters, possibly one-sided (``\\left\\{ ... \\right.``), so they do not count."""
    depth = 0
    for ch in text.replace("\\{", "").replace("\\}", ""):
        if ch == "{":
            depth += 1
            if depth > MAX_BRACE_DEPTH:
                return False
        elif ch == "}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


# ---------------------------------------------------------------------------------------------
# Equations in an answer
#
# A prediction that states an equation is judged by what it asserts. The rule:
#
# * The answer's expression is the content of its last ``\boxed{}`` (else the whole text). Its
#   equation chains ``a = b = ... = z`` are read at the top level (``=`` inside (), [], {} or a
#   set's braces is not split; ``==`` and ``:=`` count as ``=``); a side is the math next to the
#   ``=``, cut at prose words, at a top-level ``,`` ``;`` ``:``, at a sentence's end, and at any
#   other relation sign (``<``, ``\le``, ``\ne``, ``\approx``...), which ends the chain.
# * A side is *closed* when it holds no variable (numbers, + - * / ^, ``\frac``, ``\sqrt``,
#   ``\pi``...), a *name* when it is a bare variable or a function of arguments (``x``, ``a_1``,
#   ``\theta``, ``f(3)``), else *open* (``2x``, ``x+y``).
# * **Any chain whose closed sides are not all equal makes the answer wrong**, whatever the gold:
#   ``7 = 42``, ``1+1 = 42``, ``x = 3 = 42``, ``41 = x = 42``, prose "so 7 = 42". Open and name
#   sides are not evaluated (their variables are unknown).
# * When the expression is one chain and nothing else, made of closed sides and names only, and
#   the gold is not itself a relation, the answer's value is its closed side: ``x = 42``,
#   ``42 = x``, ``a = b = 42``, ``f(3) = 6 \cdot 7`` grade as 42. Otherwise the text goes to
#   math-verify as it is (``y = 2x + 1`` against ``2x+1``, a gold ``x = 5``, ``x > 3`` against an
#   interval); math-verify never equates an inequality with a number.

_RELATION_CMDS = ("le", "leq", "ge", "geq", "lt", "gt", "ne", "neq", "approx", "equiv", "sim", "simeq", "cong",
                  "leqslant", "geqslant", "ll", "gg", "to", "rightarrow", "Rightarrow", "implies", "iff", "in",
                  "notin", "subset", "subseteq", "supset", "propto", "mid", "quad", "qquad")
_CMD = re.compile(r"\\([A-Za-z]+)")
_WORD_AT = re.compile(r"[A-Za-z]{2,}")
_CLOSED_CMDS = {"frac", "dfrac", "tfrac", "sqrt", "pi", "cdot", "times", "div", "circ"}
_NAME = re.compile(r"(?:\\[A-Za-z]+|[A-Za-z])(?:'+|_\{?[A-Za-z0-9]+\}?)*(?:\([^=]*\))?")
_MAX_SIDES = 8  # closed sides math-verify is asked to compare, at most


def _answer_expression(text: str) -> str:
    boxed = last_boxed(text)
    return boxed if boxed is not None else text


def _chains(expr: str) -> tuple[list[list[str]], bool]:
    """The equation chains of ``expr`` (each a list of raw sides) and whether ``expr`` is a single
    chain and nothing else (no prose, separators or other relations around it)."""
    s = _TEXT_CMD.sub(r" \1 ", expr)
    for tok in ("\\(", "\\)", "\\[", "\\]", "$", "\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:"):
        s = s.replace(tok, " ")
    s = s.replace("\\{", "\x01").replace("\\}", "\x02").replace(":=", "=").replace("==", "=")
    chains: list[list[str]] = []
    cur: list[str] = []  # the sides of the chain being read
    side: list[str] = []
    breaks = 0  # prose, separators, other relations seen at the top level
    depth, i, n = 0, 0, len(s)

    def end_chain():
        nonlocal cur, side
        cur.append("".join(side).strip())
        if len(cur) >= 2:
            chains.append(cur)
        cur, side = [], []

    while i < n:
        ch = s[i]
        if ch in "([{\x01":
            depth += 1
        elif ch in ")]}\x02":
            depth = max(0, depth - 1)
        elif depth == 0:
            if ch == "=":
                cur.append("".join(side).strip())
                side = []
                i += 1
                continue
            if ch == "\\":
                m = _CMD.match(s, i)
                if m and m.group(1) in _RELATION_CMDS:
                    end_chain()
                    breaks += 1
                    i = m.end()
                    continue
                if m:  # another command (\frac, \sqrt, \pi...): part of the side
                    side.append(m.group(0))
                    i = m.end()
                    continue
            if ch in ",;<>!≤≥≠≈" or (ch == ":" and i + 1 < n and s[i + 1] == " ") or (
                    ch == "." and not (i + 1 < n and s[i + 1].isdigit())):
                if ch == "!" and not (i + 1 < n and s[i + 1] == "="):
                    side.append(ch)  # a factorial
                    i += 1
                    continue
                end_chain()
                breaks += 1
                i += 2 if ch == "!" else 1
                continue
            if ch.isalpha() and ch.isascii():
                m = _WORD_AT.match(s, i)
                if m:  # a prose word ends the side (a LaTeX command was consumed above)
                    end_chain()
                    breaks += 1
                    i = m.end()
                    continue
        side.append(ch)
        i += 1
    had_sides = bool(cur)
    end_chain()
    single = len(chains) == 1 and breaks == 0 and had_sides
    return chains, single


def _side_kind(side: str) -> str:
    """"closed", "name" or "open" (see the rule above); an empty side is "open"."""
    s = re.sub(r"\s+", "", side).replace("\x01", "\\{").replace("\x02", "\\}")
    if not s:
        return "open"
    rest = _CMD.sub(lambda m: "" if m.group(1) in _CLOSED_CMDS else m.group(0), s)
    if not re.search(r"[A-Za-z\\]", rest) and re.search(r"\d|\\pi", s):
        return "closed"
    if _NAME.fullmatch(s):
        return "name"
    return "open"


class _Arith:
    """Exact value of a closed side made of numbers, + - * / ^ (small integer powers), parentheses,
    braces, \\cdot, \\times, \\div and \\frac; None for anything else (\\sqrt, \\pi: math-verify's)."""

    def __init__(self, s: str):
        self.s, self.i, self.decimal, self.depth = s, 0, False, 0

    @classmethod
    def value(cls, side: str) -> tuple[Fraction, bool] | None:
        s = re.sub(r"\s+", "", side).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
        if not s or len(s) > 200:
            return None
        p = cls(s)
        try:
            v = p.expr()
        except (ValueError, ZeroDivisionError, OverflowError, IndexError, RecursionError):
            return None
        return (v, p.decimal) if v is not None and p.i == len(s) else None

    def peek(self, tok: str) -> bool:
        if self.s.startswith(tok, self.i):
            self.i += len(tok)
            return True
        return False

    def expr(self) -> Fraction:
        v = self.term()
        while True:
            if self.peek("+"):
                v += self.term()
            elif self.peek("-"):
                v -= self.term()
            else:
                return v

    def term(self) -> Fraction:
        v = self.factor()
        while True:
            if self.peek("*") or self.peek("\\cdot") or self.peek("\\times"):
                v *= self.factor()
            elif self.peek("/") or self.peek("\\div"):
                v /= self.factor()
            else:
                return v

    def factor(self) -> Fraction:
        if self.peek("-"):
            return -self.factor()
        if self.peek("+"):
            return self.factor()
        base = self.atom()
        if self.peek("^"):
            exp = self.atom()
            if exp.denominator != 1 or abs(exp) > 64 or abs(base.numerator) > 10**9 or abs(base.denominator) > 10**9:
                raise ValueError("power too big to be worth it")
            return base ** int(exp)
        return base

    def atom(self) -> Fraction:
        self.depth += 1
        if self.depth > 40:
            raise ValueError("too deep")
        try:
            for open_, close in (("(", ")"), ("{", "}"), ("[", "]")):
                if self.peek(open_):
                    v = self.expr()
                    if not self.peek(close):
                        raise ValueError("unbalanced")
                    return v
            if self.peek("\\frac"):
                if self.i < len(self.s) and self.s[self.i].isdigit():  # \frac12
                    num = Fraction(int(self.s[self.i]))
                    self.i += 1
                    if self.i >= len(self.s) or not self.s[self.i].isdigit():
                        raise ValueError("bad \\frac")
                    den = Fraction(int(self.s[self.i]))
                    self.i += 1
                    return num / den
                return self.atom() / self.atom()
            m = re.compile(r"\d+\.?\d*|\.\d+").match(self.s, self.i)
            if not m:
                raise ValueError("not a number")
            self.i = m.end()
            if "." in m.group(0):
                self.decimal = True
            return Fraction(m.group(0))
        finally:
            self.depth -= 1


def _is_relation(text: str) -> bool:
    """Whether an answer (a gold one) states a relation rather than a value."""
    expr = _answer_expression(text)
    return bool(_chains(expr)[0]) or bool(re.search(r"[<>≤≥≠]|\\(?:le|leq|ge|geq|lt|gt|ne|neq)(?![A-Za-z])", expr))


def _relation_check(pred: str, gold: str) -> tuple[bool | None, str, list[tuple[str, str]]]:
    """Apply the equation rule to a prediction: (False when it is wrong for what it asserts, else
    None; the prediction to grade: its closed side's value when the rule says so; pairs of
    closed sides that math-verify still has to find equal). Never raises."""
    try:
        return _relation_check_unsafe(pred, gold)
    except Exception:  # a reader bug must not turn into a crash of grading: no rule then
        return None, pred, []


def _relation_check_unsafe(pred: str, gold: str) -> tuple[bool | None, str, list[tuple[str, str]]]:
    chains, single = _chains(_answer_expression(pred))
    if not chains:
        return None, pred, []
    pending: list[tuple[str, str]] = []
    for chain in chains:
        closed = [side for side in chain if _side_kind(side) == "closed"]
        values = [_Arith.value(side) for side in closed]
        for side, value in zip(closed[1:], values[1:]):
            if value is not None and values[0] is not None:
                if not _numbers_equal(values[0], value):
                    return False, pred, []
            else:
                pending.append((closed[0], side))
    if len(pending) > _MAX_SIDES:
        return False, pred, []  # a chain of many unevaluated sides is no answer
    if single and not _is_relation(gold):
        chain = chains[0]
        kinds = [_side_kind(side) for side in chain]
        if "closed" in kinds and all(k in ("closed", "name") for k in kinds):
            value = chain[kinds.index("closed")]
            number = _Arith.value(value)
            if number is not None and not number[1] and number[0].denominator == 1:
                value = str(number[0])  # 6 \cdot 7 -> 42, for the fast path
            return None, value, pending
    return None, pred, pending


def _fast_equal(pred: str | None, gold: str) -> bool | None:
    """Decide without sympy when the strings allow it; None defers to math-verify. An empty,
    overlong or badly braced prediction is malformed, hence wrong; so is an equation whose sides
    disagree (see the rule above)."""
    if pred is None or not str(pred).strip() or not str(gold).strip():
        return False
    pred = str(pred)
    if len(pred) > MAX_ANSWER_CHARS or not _braces_ok(pred):
        return False
    verdict, pred, pending = _relation_check(pred, str(gold))
    if verdict is False:
        return False
    if pending:
        return None  # closed sides only sympy can compare: math-verify's
    p, g = normalize_answer(pred), normalize_answer(str(gold))
    if not p or not g:
        return False
    if p == g:
        return True
    np_, ng = _as_number(p), _as_number(g)
    if np_ is not None and ng is not None:
        return _numbers_equal(np_, ng)
    return None


def vote_key(answer: str) -> str:
    """Canonical string for majority voting: "0.5", "\\frac{1}{2}" and "1/2" all give "1/2"."""
    s = normalize_answer(answer)
    number = _as_number(s)
    return str(number[0]) if number is not None else s


# ---------------------------------------------------------------------------------------------
# math-verify


_PROSE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}\s+[A-Za-z]{2,}")


def _as_latex(answer: str, is_gold: bool) -> str:
    """What to hand math-verify: a bare answer is boxed so LaTeX parsing applies; prose is left as is."""
    if "\\boxed" in answer or (not is_gold and _PROSE.search(_TEXT_CMD.sub("", answer))):
        return answer
    a = answer.strip().strip("$")
    return "\\boxed{" + _BARE_PI.sub(r"\\pi", a) + "}"


@lru_cache(maxsize=65536)
def _parse(answer: str, is_gold: bool, timeout: int | None):
    from math_verify import parse

    return parse(_as_latex(answer, is_gold), parsing_timeout=timeout)


def _mv_equal(pred: str, gold: str, timeout: int | None) -> bool:
    """math-verify's verdict, after the equation rule (its closed sides compared by math-verify
    too); any failure is False."""
    from math_verify import verify

    try:
        verdict, pred, pending = _relation_check(pred, gold)
        if verdict is False:
            return False
        for a, b in pending:
            pa, pb = _parse(a, True, timeout), _parse(b, False, timeout)
            if not (pa and pb and verify(pa, pb, timeout_seconds=timeout)):
                return False
        g = _parse(gold, True, timeout)
        p = _parse(pred, False, timeout)
        return bool(g and p and verify(g, p, timeout_seconds=timeout))
    except Exception:
        return False


def answers_equal(pred: str | None, gold: str) -> bool:
    """In-process check (the equation rule, fast paths, then math-verify). Off the main thread it
    runs without a time limit, since signal.alarm is unavailable there: use a :class:`Grader` for
    untrusted text."""
    fast = _fast_equal(pred, gold)
    if fast is not None:
        return fast
    on_main = threading.current_thread() is threading.main_thread()
    return _mv_equal(str(pred), str(gold), 3 if on_main else None)


# ---------------------------------------------------------------------------------------------
# The worker pool


_READY = "ready"


class _Overrun(BaseException):
    """Raised by the worker's interval timer; a BaseException so math-verify's handlers let it pass."""


def _overrun(signum, frame):
    raise _Overrun


def _worker_main(memory_mb: int, limit_s: float) -> None:
    """Worker loop: one JSON [pred, gold] per line in, "1"/"0" per line out; EOF ends it.

    math-verify's own alarms are off (whole seconds only); one interval timer per answer gives up
    first, so the worker usually survives an overrun instead of being killed and restarted."""
    import logging
    import resource
    import signal

    logging.disable(logging.CRITICAL)
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _overrun)
    replies = os.fdopen(os.dup(1), "w")  # the protocol's channel; stray prints go to stderr
    os.dup2(2, 1)
    _mv_equal("1", "\\frac{1}{2}", None)  # import sympy and latex2sympy before saying ready
    print(_READY, file=replies, flush=True)
    for line in sys.stdin:
        try:
            pred, gold = json.loads(line)
            signal.setitimer(signal.ITIMER_REAL, limit_s)
            ok = _mv_equal(pred, gold, None)
            signal.setitimer(signal.ITIMER_REAL, 0)
        except BaseException:  # overrun, MemoryError, RecursionError...: wrong, and the worker lives
            signal.setitimer(signal.ITIMER_REAL, 0)
            ok = False
        print("1" if ok else "0", file=replies, flush=True)


class _Worker:
    """One grading subprocess, driven over pipes; started with -m so no caller code is re-imported.

    It starts in the background: until it says "ready" its deadline is the start-up limit, then
    the deadline of the answer it is grading."""

    START_TIMEOUT_S = 120.0

    def __init__(self, memory_mb: int, limit_s: float):
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "evomath.grading", str(memory_mb), str(limit_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
            bufsize=1,
        )
        self.ready = False
        self.task: int | None = None
        self.started = 0.0
        self.deadline = time.monotonic() + self.START_TIMEOUT_S

    def fileno(self) -> int:
        return self.proc.stdout.fileno()

    def send(self, task: int, pred: str, gold: str, timeout_s: float) -> None:
        self.proc.stdin.write(json.dumps([pred, gold]) + "\n")
        self.proc.stdin.flush()
        self.task, self.started = task, time.monotonic()
        self.deadline = self.started + timeout_s

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


def _kill_all(workers: list[_Worker]) -> None:
    for w in workers:
        w.kill()


class Grader:
    """math-verify in a pool of worker processes, with a per-answer time limit the parent enforces.

    ``stats`` counts answers decided by the fast path, answers sent to the pool (distinct pairs),
    timeouts, worker crashes, and the longest time one pooled answer took (``max_seconds``).
    """

    def __init__(self, workers: int = 1, timeout_s: float = 5.0, memory_mb: int = 2048):
        self.n_workers = max(1, workers)
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        # The worker's own timer fires first, so an overrun rarely costs a restart.
        self._inner_timeout = 0.8 * timeout_s
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _kill_all, self._workers)
        self.stats = {"fast": 0, "pooled": 0, "timeouts": 0, "crashes": 0, "max_seconds": 0.0}

    def grade(self, pred: str | None, gold: str) -> bool:
        return self.grade_many([(pred, gold)])[0]

    def grade_many(self, pairs: Sequence[tuple[str | None, str]]) -> list[bool]:
        """Grade (prediction, gold) pairs; a failure or timeout is False, never an exception."""
        results = [False] * len(pairs)
        pending: dict[tuple[str, str], list[int]] = {}
        for i, (pred, gold) in enumerate(pairs):
            fast = _fast_equal(pred, gold)
            if fast is None:
                pending.setdefault((str(pred), str(gold)), []).append(i)
            else:
                results[i] = fast
        self.stats["fast"] += len(pairs) - sum(len(v) for v in pending.values())
        if pending:
            keys = list(pending)
            with self._lock:
                verdicts = self._run_pool(keys)
            for key, ok in zip(keys, verdicts):
                for i in pending[key]:
                    results[i] = ok
        return results

    def _run_pool(self, keys: list[tuple[str, str]]) -> list[bool]:
        """Feed one pair at a time to each ready worker; replace any that overrun or die."""
        verdicts = [False] * len(keys)
        todo = list(range(len(keys)))[::-1]
        while len(self._workers) < min(self.n_workers, len(keys)):
            self._workers.append(_Worker(self.memory_mb, self._inner_timeout))
        while todo or any(w.task is not None for w in self._workers):
            for w in list(self._workers):
                if w.ready and w.task is None and todo:
                    i = todo.pop()
                    try:
                        w.send(i, *keys[i], self.timeout_s)
                    except OSError:  # it died while idle; the answer counts as wrong
                        self._fail(w, crashed=True)
            waiting = [w for w in self._workers if w.task is not None or not w.ready]
            wait = max(0.0, min(w.deadline for w in waiting) - time.monotonic())
            readable, _, _ = select.select(waiting, [], [], wait)
            for w in readable:
                line = w.proc.stdout.readline().strip()
                if not w.ready and line == _READY:
                    w.ready, w.deadline = True, float("inf")
                elif w.task is not None and line in ("0", "1"):
                    verdicts[w.task] = line == "1"
                    self._record(w)
                    w.task = None
                else:
                    self._fail(w, crashed=True)
            now = time.monotonic()
            for w in waiting:
                if w not in readable and now >= w.deadline:
                    self._fail(w, crashed=False)
        self.stats["pooled"] += len(keys)
        return verdicts

    def _record(self, worker: _Worker) -> None:
        self.stats["max_seconds"] = max(self.stats["max_seconds"], time.monotonic() - worker.started)

    def _fail(self, worker: _Worker, crashed: bool) -> None:
        """An answer's worker died or overran: the answer is wrong and a fresh worker starts."""
        worker.kill()
        if not worker.ready:
            raise RuntimeError("a grading worker failed to start; is math-verify installed?")
        if worker.task is not None:
            self._record(worker)
        self.stats["crashes" if crashed else "timeouts"] += 1
        self._workers[self._workers.index(worker)] = _Worker(self.memory_mb, self._inner_timeout)

    def close(self) -> None:
        self._finalizer()
        self._workers.clear()

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    _worker_main(int(sys.argv[1]), float(sys.argv[2]))
