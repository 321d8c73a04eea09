"""Per-snippet cost of each sandbox isolation mode, side by side in one run.

Modes (all alive at once, one worker each, measured in interleaved rounds so that the load of a
shared machine falls on all of them alike):

* ``bwrap``: full isolation: bwrap's minimal filesystem view around the worker, uid switch,
  PID/network/IPC namespaces, private /proc and /tmp (the default where bwrap is installed);
* ``namespaces``: bwrap off: the worker's own namespaces, the checkout/home/cwd masked;
* ``none``: namespaces off (a default Docker container): uid switch and rlimits only;
* ``in-process``: ``exec`` of the same code in this process, no sandbox at all: the floor.

Printed: worker start-up (seconds until the first snippet's result), then milliseconds per
snippet, median over the rounds, for a trivial snippet and a sympy one (the heavy worker), and the
ratio of each mode to ``namespaces`` (what the pool did before bwrap) and to ``none``.

    python benchmarks/sandbox_overhead.py [--rounds 15 --snippets 40]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time

from evomath.config import SandboxConfig
from evomath.sandbox import Sandbox

TRIVIAL = "x = sum(range(100))\nprint(x)"
SYMPY = "import sympy\nx = sympy.symbols('x')\nprint(sympy.factor(x**2 - 1))"
MODES = {"bwrap": dict(), "namespaces": dict(bwrap=False), "none": dict(namespaces=False)}


def in_process(code: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, "<solution>", "exec"), {"__name__": "__main__"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--snippets", type=int, default=40, help="snippets per mode per round")
    args = ap.parse_args()

    boxes, startup = {}, {}
    for mode, kw in MODES.items():
        t0 = time.perf_counter()
        sb = Sandbox(SandboxConfig(workers=1, timeout_s=10.0), **kw)
        assert sb.run(TRIVIAL).ok
        startup[mode] = time.perf_counter() - t0
        assert sb.run(SYMPY).ok  # starts the heavy worker
        boxes[mode] = sb
    for mode, sb in boxes.items():
        iso = sb.isolation
        print(f"{mode:>10}: fs_view={iso.get('fs_view')} uid={iso.get('uid') is not None} pidns={iso.get('pidns')} "
              f"netns={iso.get('netns')} private_tmp={iso.get('private_tmp')} bwrap={iso.get('bwrap')} "
              f"missing={len(iso.get('missing', []))}")
    import sympy  # noqa: F401  (the in-process floor does not pay the import either)

    per = {m: {"trivial": [], "sympy": []} for m in [*MODES, "in-process"]}
    for _ in range(args.rounds):
        for mode, sb in boxes.items():
            for kind, code in (("trivial", TRIVIAL), ("sympy", SYMPY)):
                t0 = time.perf_counter()
                results = sb.run_many([code] * args.snippets)
                dt = time.perf_counter() - t0
                assert all(r.ok for r in results), results[0]
                per[mode][kind].append(1000 * dt / args.snippets)
        for kind, code in (("trivial", TRIVIAL), ("sympy", SYMPY)):
            t0 = time.perf_counter()
            for _ in range(args.snippets):
                in_process(code)
            per["in-process"][kind].append(1000 * (time.perf_counter() - t0) / args.snippets)
    for sb in boxes.values():
        sb.close()

    med = {m: {k: statistics.median(v) for k, v in d.items()} for m, d in per.items()}
    print(f"\n{args.rounds} rounds x {args.snippets} snippets per mode and kind, one worker, median ms per snippet")
    print(f"{'mode':>10} {'start-up s':>10} {'trivial ms':>11} {'sympy ms':>9} {'x namespaces':>13} {'x none':>7}")
    for mode in [*MODES, "in-process"]:
        t, s = med[mode]["trivial"], med[mode]["sympy"]
        ratio_ns = t / med["namespaces"]["trivial"]
        ratio_none = t / med["none"]["trivial"]
        start = f"{startup[mode]:.2f}" if mode in startup else "-"
        print(f"{mode:>10} {start:>10} {t:>11.2f} {s:>9.2f} {ratio_ns:>13.2f} {ratio_none:>7.2f}")
    print("(ratios are of the trivial snippet's time; sympy's ratios: "
          + ", ".join(f"{m} {med[m]['sympy'] / med['namespaces']['sympy']:.2f}" for m in MODES) + " x namespaces)")


if __name__ == "__main__":
    main()
