"""The code sandbox: normal behaviour, and hostile snippets that must be contained.

Every hostile test checks three things: the snippet was contained (its result, and no process or
file it tried to leave behind), the pool still serves a normal snippet correctly, and this test
process (and a root-owned sentinel process it started) is unharmed.

Most hostile snippets run twice: with full isolation (whatever this machine permits, normally
uid switch + PID/network/mount namespaces) and with namespaces turned off (the Docker-like
degraded mode: uid switch, process groups and the subreaper sweep only).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from evomath.config import SandboxConfig
from evomath.sandbox import ExecResult, Sandbox

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox needs Linux")

TIMEOUT = 1.0
SECRET = "evomath-test-secret-" + uuid.uuid4().hex
UID_BASE = 2_000_000_000


# ---------------------------------------------------------------------------- process helpers
def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _uid_of(pid: int) -> int | None:
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return None


def _cmdline(pid: int) -> str:
    return _read(f"/proc/{pid}/cmdline").replace("\0", " ")


def _children(pid: int) -> list[int]:
    return [int(x) for x in _read(f"/proc/{pid}/task/{pid}/children").split()]


def _state(pid: int) -> str:
    stat = _read(f"/proc/{pid}/stat")
    return stat.rsplit(")", 1)[1].split()[0] if ")" in stat else "?"


def _processes_with(marker: str) -> list[int]:
    return [p for p in _pids() if p != os.getpid() and marker in _cmdline(p)]


class Tracker:
    """Remembers every worker of a sandbox, to find any process a snippet left behind."""

    def __init__(self, sb: Sandbox):
        self.sb = sb
        self.workers: set[int] = set()

    def refresh(self) -> list[int]:
        pids = self.sb.worker_pids()
        self.workers.update(pids)
        return pids

    def leftovers(self) -> list[str]:
        found = []
        for w in self.refresh():
            found += [f"child {c} of worker {w}: {_cmdline(c)!r}" for c in _children(w)]
        uids = {UID_BASE + w for w in self.workers}
        for p in _pids():
            if _uid_of(p) in uids and _state(p) != "Z":  # a zombie is dead, only not yet reaped
                found.append(f"process {p} ({_state(p)}) of sandbox uid {_uid_of(p)}: {_cmdline(p)!r}")
        return found

    def wait_clean(self, seconds: float = 3.0) -> list[str]:
        """For cleanup that is asynchronous (after a worker was killed): poll until clean."""
        deadline = time.monotonic() + seconds
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left


class _Subreaper:
    """Make this test process a child subreaper for a while, so processes orphaned by a killed
    worker come back to us (instead of to pid 1, which may never reap them) and are reaped."""

    def __init__(self, tracker: Tracker):
        self.tracker = tracker

    def __enter__(self):
        import ctypes

        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.prctl(36, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
        return self

    def __exit__(self, *exc):
        import ctypes

        self.reap()
        self.libc.prctl(36, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))

    def reap(self) -> None:
        me = os.getpid()
        for p in _pids():
            stat = _read(f"/proc/{p}/stat")
            if ")" not in stat or p in self.tracker.workers:
                continue
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if state == "Z" and int(ppid) == me:
                try:
                    os.waitpid(p, 0)
                except ChildProcessError:
                    pass


def _sandbox(**kw) -> Sandbox:
    cfg = dict(workers=2, timeout_s=TIMEOUT, memory_mb=256, max_processes=1, max_file_mb=4, max_output_chars=1024)
    extra = {k: kw.pop(k) for k in ("namespaces", "switch_user", "preload", "heavy_preload") if k in kw}
    cfg.update(kw)
    return Sandbox(SandboxConfig(**cfg), **extra)


@pytest.fixture(scope="module")
def sentinel():
    """A root-owned process of ours that no snippet may kill (kill(-1), /proc scans...)."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module", autouse=True)
def secret_env():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVOMATH_SANDBOX_TEST_SECRET", SECRET)
        mp.setenv("OPENAI_API_KEY", SECRET)
        yield


@pytest.fixture(scope="module", params=["full", "no-namespaces"])
def box(request, secret_env):
    """(sandbox, tracker) for each isolation mode, max_processes=1."""
    sb = _sandbox(namespaces=request.param == "full")
    tr = Tracker(sb)
    sb.run("pass")  # wait until ready
    tr.refresh()
    yield sb, tr
    sb.close()
    assert not sb.worker_pids()


@pytest.fixture(scope="module", params=["full", "no-namespaces"])
def procbox(request, secret_env):
    """A sandbox that allows snippets a few processes (max_processes=8)."""
    sb = _sandbox(namespaces=request.param == "full", max_processes=8, workers=1)
    tr = Tracker(sb)
    sb.run("pass")
    tr.refresh()
    yield sb, tr
    sb.close()


@pytest.fixture(scope="module")
def sb():
    """The default configuration (with the sympy worker)."""
    with Sandbox(SandboxConfig(workers=2, timeout_s=5.0)) as s:
        yield s


def assert_healthy(sb: Sandbox, tr: Tracker, sentinel, workers_before: list[int] | None = None):
    res = sb.run("print(sum(range(10)), 'ok ✓')")
    assert res == ExecResult(True, "45 ok ✓\n", None)
    assert sentinel.poll() is None, "the sentinel process was killed"
    assert not tr.leftovers(), tr.leftovers()
    if workers_before is not None:
        assert set(workers_before) <= set(sb.worker_pids()), "a worker died"


# ---------------------------------------------------------------------------- normal behaviour
def test_prints_result(sb):
    assert sb.run("x = 6 * 7\nprint(x)") == ExecResult(True, "42\n", None)


def test_exception_last_line_is_the_error(sb):
    res = sb.run("print('partial')\ny = 1 / 0")
    assert not res.ok
    assert res.error == "ZeroDivisionError: division by zero"
    assert res.output.startswith("partial\n")
    assert res.output.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "<string>" not in res.output  # no sandbox internals in the traceback
    assert sb.run("def f(:\n  pass").error.startswith("SyntaxError")
    assert sb.run("print(undefined_name)").error == "NameError: name 'undefined_name' is not defined"


def test_code_builds_on_earlier_steps(sb):
    steps = ["a = 3", "b = a * 4\nprint(b)", "from fractions import Fraction\nc = Fraction(a, b)\nprint(a + b, c)"]
    outs = [sb.run("\n".join(steps[: k + 1])) for k in range(len(steps))]
    assert [o.ok for o in outs] == [True, True, True]
    assert outs[0].output == ""
    assert outs[1].output == "12\n"
    assert outs[2].output == "12\n15 1/4\n"


def test_unicode_output(sb):
    text = "π ≈ 3.14159 · ∑ ✓ 数学 🎉"
    assert sb.run(f"print({text!r})") == ExecResult(True, text + "\n", None)
    res = sb.run("print('\\ud800 lone surrogate')")  # unencodable: escaped, not an error
    assert res.ok and "lone surrogate" in res.output


def test_run_many_keeps_order_and_submit_returns_futures(sb):
    codes = [f"import time\ntime.sleep({0.02 * (i % 3)})\nprint({i})" for i in range(12)]
    assert [r.output for r in sb.run_many(codes)] == [f"{i}\n" for i in range(12)]
    fut = sb.submit("print('later')")
    assert fut.result(timeout=30) == ExecResult(True, "later\n", None)


def test_sympy_and_stdlib_imports(sb):
    res = sb.run("import sympy as sp\nx = sp.symbols('x')\nprint(sp.factor(x**2 - 1), sp.sqrt(8))")
    assert res == ExecResult(True, "(x - 1)*(x + 1) 2*sqrt(2)\n", None)
    # modules that were not preloaded must import too (even when Python lives under /root)
    res = sb.run("import csv, io, socket, encodings.cp1252\nprint('x'.encode('cp1252'), csv.__name__)")
    assert res == ExecResult(True, "b'x' csv\n", None)


def test_scratch_dir_is_private_and_fresh(sb):
    res = sb.run(
        "import os, tempfile\nopen('f.txt', 'w').write('hi')\nprint(open('f.txt').read(), os.listdir('.'))\n"
        "with tempfile.NamedTemporaryFile() as t: print(os.path.dirname(t.name) == os.getcwd())"
    )
    assert res == ExecResult(True, "hi ['f.txt']\nTrue\n", None)
    assert sb.run("import os\nprint(os.listdir('.'))") == ExecResult(True, "[]\n", None)


def test_output_is_truncated_to_max_output_chars(sb):
    res = sb.run("print('a' * 5000)")
    assert res.ok and len(res.output) == 1024 and res.output.startswith("aaa")
    res = sb.run("print('b' * 5000)\nraise ValueError('boom')")  # keeps the error's tail
    assert not res.ok and len(res.output) <= 1024 and res.output.endswith("ValueError: boom")


def test_exit_codes(sb):
    assert sb.run("import sys\nsys.exit(3)").error == "exit code 3"
    assert sb.run("import sys\nprint('bye')\nsys.exit(0)") == ExecResult(True, "bye\n", None)
    res = sb.run("import sys\nsys.exit('fatal: gave up')")
    assert res.error == "exit code 1" and "fatal: gave up" in res.output
    assert sb.run("import os\nprint('flushed', flush=True)\nos._exit(0)") == ExecResult(True, "flushed\n", None)
    assert sb.run("import os\nos._exit(7)").error == "exit code 7"


def test_close_releases_everything(secret_env):
    s = _sandbox(workers=1)
    assert s.run("print(1)").ok
    pids = s.worker_pids()
    s.close()
    s.close()  # idempotent
    with pytest.raises(RuntimeError):
        s.submit("print(1)")
    time.sleep(0.1)
    assert not [p for p in pids if os.path.exists(f"/proc/{p}") and "Z" not in _read(f"/proc/{p}/stat")[:80]]


def test_forked_copy_of_the_caller_cannot_use_or_close_it(sb):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a forked copy of this process (e.g. a multiprocessing fork): refuse, do not hang
        try:
            sb.run("print(1)")
            os.write(w, b"ran")
        except RuntimeError:
            os.write(w, b"refused")
        finally:
            sb.close()  # must not stop the parent's workers
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    assert os.read(r, 100) == b"refused"
    os.close(r)
    assert sb.run("print(1)") == ExecResult(True, "1\n", None)


def test_latency_of_trivial_snippets(sb):
    sb.run_many(["print(1+1)"] * 4)  # warm
    t0 = time.perf_counter()
    results = sb.run_many(["print(1+1)"] * 200)
    dt = time.perf_counter() - t0
    assert all(r == ExecResult(True, "2\n", None) for r in results)
    print(f"\nsandbox: 200 snippets in {dt:.3f} s = {1000 * dt / 200:.2f} ms per snippet "
          f"({sb.config.workers} workers); isolation: {sb.isolation}")
    assert dt / 200 < 0.1  # generous: a few ms on an idle machine
    sb.run_many(["import sympy"] * 4)  # starts the sympy workers (one per slot, on first use)
    t0 = time.perf_counter()
    results = sb.run_many(["import sympy\nprint(sympy.Rational(1, 3) + 1)"] * 20)
    dt = time.perf_counter() - t0
    assert all(r == ExecResult(True, "4/3\n", None) for r in results)
    print(f"sandbox: 20 sympy snippets in {dt:.3f} s = {1000 * dt / 20:.2f} ms per snippet")
    assert dt / 20 < 0.15  # importing sympy in each snippet would cost ~0.2-0.4 s


def test_isolation_report(sb):
    iso = sb.isolation
    for key in ("uid", "pidns", "netns", "private_tmp", "nproc_limit", "subreaper"):
        assert key in iso
    if os.geteuid() == 0:
        assert iso["uid"] is not None and iso["nproc_limit"]


# ---------------------------------------------------------------------------- hostile snippets
def _escape_path() -> str:
    return f"/tmp/evomath_sandbox_escape_{uuid.uuid4().hex}"


HOSTILE = {
    "infinite_loop": ("while True:\n    pass", lambda r, iso: r.error == "timeout"),
    "sleep_past_limit": ("import time\ntime.sleep(100)", lambda r, iso: r.error == "timeout"),
    "fork_bomb": ("import os\nwhile True:\n    os.fork()", lambda r, iso: not r.ok),
    "fork_bomb_ctypes": (  # bypasses any Python-level guard; RLIMIT_NPROC holds it
        "import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.fork()",
        lambda r, iso: not r.ok,
    ),
    "memory_bomb": ("x = bytearray(10 ** 10)", lambda r, iso: r.error == "memory"),
    "memory_growth": ("a = []\nwhile True:\n    a.append(' ' * 10 ** 7)", lambda r, iso: r.error == "memory"),
    "huge_output": ("print('x' * 10 ** 6)", lambda r, iso: r.ok and len(r.output) == 1024),
    "output_over_file_limit": (  # stdout is a file too: RLIMIT_FSIZE (4 MB here) ends it
        "print('x' * 10 ** 7)",
        lambda r, iso: not r.ok and r.output.startswith("xxx") and "File too large" in r.error,
    ),
    "endless_output": ("while True:\n    print('spam')", lambda r, iso: not r.ok and len(r.output) <= 1024),
    "huge_line_no_newline": (
        "import sys\nsys.stdout.write('y' * 5_000_000)",
        lambda r, iso: r.ok and 0 < len(r.output) <= 1024 and set(r.output) <= {"y", "."},
    ),
    "binary_garbage": (
        "import sys\nsys.stdout.buffer.write(bytes(range(256)) * 50)",
        lambda r, iso: r.ok and len(r.output) <= 1024 and "\ufffd" in r.output,
    ),
    "deep_recursion": ("def f(n):\n    return f(n + 1)\nf(0)", lambda r, iso: r.error.startswith("RecursionError")),
    "c_stack_overflow": (
        "import sys\nsys.setrecursionlimit(10 ** 8)\ndef f(n):\n    return f(n + 1)\nf(0)",
        lambda r, iso: not r.ok,
    ),
    "segfault": ("import ctypes\nctypes.string_at(0)", lambda r, iso: r.error == "killed by signal SIGSEGV"),
    "kill_parent": ("import os\nos.kill(os.getppid(), 9)\nimport time\ntime.sleep(0.2)\nprint('alive')", None),
    "kill_everything": ("import os\nos.kill(-1, 9)\nprint('still here')", None),
    "kill_by_proc_scan": (
        "import os\nfor p in os.listdir('/proc'):\n    if p.isdigit() and int(p) != os.getpid():\n"
        "        try:\n            os.kill(int(p), 9)\n        except OSError:\n            pass\nprint('done')",
        None,
    ),
    "sys_exit": ("import sys\nsys.exit(3)", lambda r, iso: r.error == "exit code 3"),
    "os_exit": ("import os\nos._exit(0)", lambda r, iso: r.ok),
    "close_stdout": ("import sys\nsys.stdout.close()\nprint('x')", lambda r, iso: not r.ok),
    "close_fds": ("import os\nos.close(1)\nos.close(2)\nprint('x')", lambda r, iso: not r.ok),
    "subprocess": ("import subprocess\nsubprocess.run(['sleep', '100'])", lambda r, iso: not r.ok),
    "signal_tampering": (
        "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU, signal.SIGALRM):\n"
        "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass",
        lambda r, iso: r.error == "timeout",
    ),
    "keyboard_interrupt": ("raise KeyboardInterrupt", lambda r, iso: r.error == "KeyboardInterrupt"),
    "thread_bomb": (
        "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(100,), daemon=True).start()",
        lambda r, iso: not r.ok,
    ),
    "huge_file": (
        "with open('big.bin', 'wb') as f:\n    f.write(b'x' * (10 * 2 ** 20))",
        lambda r, iso: not r.ok and ("File too large" in r.error or r.error == "file size limit"),
    ),
    "memfd_flood": (  # in-memory files escape RLIMIT_AS; RLIMIT_NOFILE bounds them
        "import os\nfds = []\nwhile True:\n    fd = os.memfd_create('x')\n    os.write(fd, b'x' * 2 ** 20)\n    fds.append(fd)",
        lambda r, iso: not r.ok and "Too many open files" in r.error,
    ),
    "read_root_files": (  # the uid switch: root's files are out of reach
        "print(open('/etc/shadow').read()[:20])",
        lambda r, iso: iso["uid"] is None or (not r.ok and "PermissionError" in r.error),
    ),
    "stdin_read": ("x = input()", lambda r, iso: r.error == "EOFError: EOF when reading a line"),
    "stdin_read_raw": ("import os, sys\nprint(len(sys.stdin.read()), os.read(0, 10))", lambda r, iso: r.output == "0 b''\n"),
    "setuid_root": ("import os\nos.setuid(0)\nprint(os.getuid())", lambda r, iso: iso["uid"] is None or not r.ok),
    "hostile_exception_str": (
        "class E(Exception):\n    def __str__(self):\n        raise RuntimeError('no')\nraise E()",
        lambda r, iso: r.error == "E",
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_snippet_is_contained(box, sentinel, name):
    sb, tr = box
    code, check = HOSTILE[name]
    before = tr.refresh()
    t0 = time.monotonic()
    res = sb.run(code)
    elapsed = time.monotonic() - t0
    assert isinstance(res, ExecResult) and isinstance(res.output, str)
    assert len(res.output) <= 1024
    res.output.encode("utf-8")  # always valid text
    assert elapsed < TIMEOUT + 3, f"took {elapsed:.1f}s"
    if check is not None:
        assert check(res, sb.isolation), res
    assert_healthy(sb, tr, sentinel, before)


def test_environment_secrets_are_invisible(box, sentinel):
    sb, tr = box
    assert os.environ["EVOMATH_SANDBOX_TEST_SECRET"] == SECRET
    worker = tr.refresh()[0]
    code = (
        "import os\nprint(dict(os.environ))\n"
        f"for p in ('/proc/self/environ', '/proc/{os.getpid()}/environ', '/proc/{worker}/environ', '/proc/1/environ'):\n"
        "    try:\n        print(p, open(p, 'rb').read())\n    except OSError as e:\n        print(p, e)\n"
    )
    res = sb.run(code)
    assert res.ok and "HOME" in res.output
    assert SECRET not in res.output
    assert "EVOMATH_SANDBOX_TEST_SECRET" not in res.output and "OPENAI_API_KEY" not in res.output
    assert_healthy(sb, tr, sentinel)


def test_writes_outside_scratch_do_not_land(box, sentinel):
    sb, tr = box
    iso = sb.isolation
    target = _escape_path()
    res = sb.run(f"open({target!r}, 'w').write('escaped')")  # the guard refuses it
    assert not res.ok and "PermissionError" in res.error
    res = sb.run(f"import os\nos.makedirs({target + '_dir'!r})")
    assert not res.ok and "PermissionError" in res.error
    # _io.FileIO bypasses the guard: only kernel-level isolation stops it
    bypass = _escape_path()
    res = sb.run(f"import _io\nf = _io.FileIO({bypass!r}, 'w')\nf.write(b'escaped')\nf.close()\nprint('wrote')")
    try:
        assert not os.path.exists(target) and not os.path.exists(target + "_dir")
        if iso["private_tmp"]:
            assert res.ok and not os.path.exists(bypass), "the private /tmp leaked to the host"
        # root-owned places: the uid switch makes the kernel refuse
        etc = f"/etc/evomath_sandbox_escape_{uuid.uuid4().hex}"
        res = sb.run(f"import _io\n_io.FileIO({etc!r}, 'w')")
        try:
            if iso["uid"] is not None:
                assert not res.ok and "PermissionError" in res.error
                assert not os.path.exists(etc)
        finally:
            Path(etc).unlink(missing_ok=True)
    finally:
        Path(bypass).unlink(missing_ok=True)  # degraded mode: the write is only guarded, clean up
    assert_healthy(sb, tr, sentinel)


def test_network_is_unreachable(box, sentinel):
    sb, tr = box
    iso = sb.isolation
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.setblocking(False)
    port = srv.getsockname()[1]
    try:
        res = sb.run(
            f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=0.5)\ns.sendall(b'hello')\nprint('connected')"
        )
        if iso["netns"]:
            assert not res.ok and "unreachable" in res.error.lower()
            with pytest.raises(BlockingIOError):
                srv.accept()  # nothing ever arrived
    finally:
        srv.close()
    assert_healthy(sb, tr, sentinel)


def test_processes_of_a_snippet_are_killed(procbox, sentinel):
    """With max_processes > 1: children, grandchildren and setsid daemons all die with the snippet."""
    sb, tr = procbox
    marker = f"{100 + uuid.uuid4().int % 1000}.{os.getpid()}"
    before = tr.refresh()
    # a subprocess still running at the timeout
    res = sb.run(f"import subprocess\nsubprocess.run(['sleep', '{marker}1'])")
    assert res.error == "timeout"
    assert not _processes_with(f"sleep {marker}1")
    # a daemon that escapes the process group and session, its parent already gone
    res = sb.run(
        "import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        f"        os.execvp('sleep', ['sleep', '{marker}2'])\n    os._exit(0)\nos.wait()\nprint('parent done')"
    )
    assert res == ExecResult(True, "parent done\n", None)
    assert not _processes_with(f"sleep {marker}2")
    # a bounded fork bomb: RLIMIT_NPROC stops it, everything is reaped
    res = sb.run("import os, time\nfor _ in range(50):\n    try:\n        os.fork()\n    except OSError:\n        break\ntime.sleep(100)")
    assert res.error == "timeout"
    res = sb.run("import os\nwhile True:\n    os.fork()")  # every copy fails; the error is the snippet's own
    assert res.error == "BlockingIOError: [Errno 11] Resource temporarily unavailable"
    # threads count against max_processes too
    res = sb.run("import threading, time\nts = [threading.Thread(target=time.sleep, args=(100,), daemon=True) for _ in range(50)]\nfor t in ts:\n    t.start()")
    assert not res.ok and "thread" in res.error
    assert_healthy(sb, tr, sentinel, before)


@pytest.mark.parametrize("namespaces", [True, False], ids=["full", "no-namespaces"])
def test_worker_death_is_survived(sentinel, secret_env, namespaces):
    """If a worker dies mid-job (killed from outside here), the job gets an error and the pool
    restarts the worker transparently."""
    sb = _sandbox(namespaces=namespaces, timeout_s=20.0, workers=1)
    tr = Tracker(sb)
    with _Subreaper(tr) as reaper:
        try:
            sb.run("pass")
            fut = sb.submit("import time\ntime.sleep(30)")
            deadline = time.monotonic() + 10
            victims: list[int] = []
            while not victims and time.monotonic() < deadline:
                time.sleep(0.05)
                victims = [w for w in tr.refresh() if _children(w)]
            assert victims, "no worker was busy"
            os.kill(victims[0], signal.SIGKILL)
            assert fut.result(timeout=30) == ExecResult(False, "", "sandbox worker died")
            assert not tr.wait_clean(), tr.leftovers()
            reaper.reap()
            assert_healthy(sb, tr, sentinel)
            assert victims[0] not in sb.worker_pids()
            assert all(r == ExecResult(True, "1\n", None) for r in sb.run_many(["print(1)"] * 4))
        finally:
            sb.close()


def test_unresponsive_worker_is_replaced(sentinel, secret_env, monkeypatch):
    """A worker that stops answering (SIGSTOPped here) is killed and replaced after the grace."""
    import evomath.sandbox as sandbox_module

    monkeypatch.setattr(sandbox_module, "_WORKER_GRACE_S", 0.5)
    sb = _sandbox(workers=1)
    tr = Tracker(sb)
    with _Subreaper(tr) as reaper:
        try:
            sb.run("pass")
            (worker,) = tr.refresh()
            fut = sb.submit("import time\ntime.sleep(30)")
            time.sleep(0.2)
            os.kill(worker, signal.SIGSTOP)
            t0 = time.monotonic()
            assert fut.result(timeout=30) == ExecResult(False, "", "sandbox worker unresponsive")
            assert time.monotonic() - t0 < TIMEOUT + 3
            assert not tr.wait_clean(), tr.leftovers()
            reaper.reap()
            assert_healthy(sb, tr, sentinel)
            assert worker not in sb.worker_pids()
        finally:
            sb.close()


def test_without_uid_switch_parent_kill_is_contained(sentinel, secret_env):
    """Root without a uid switch (the weakest mode): the guard refuses os.fork and os.kill; with
    ctypes, ``kill(getppid(), 9)`` hits a supervisor process, not the worker; a snippet that hunts
    down the worker through /proc kills it, and the pool restarts it."""
    sb = _sandbox(namespaces=False, switch_user=False, workers=1)
    tr = Tracker(sb)
    with _Subreaper(tr):
        try:
            sb.run("pass")
            before = tr.refresh()
            res = sb.run("import os\nos.kill(os.getppid(), 9)")  # the guard refuses
            assert not res.ok and "not allowed" in res.error
            res = sb.run("import ctypes, os\nctypes.CDLL(None).kill(os.getppid(), 9)\nimport time\ntime.sleep(5)")
            assert not res.ok  # the supervisor died, not the worker
            assert sb.worker_pids() == before
            res = sb.run("import os\nos.fork()")
            assert not res.ok and "not allowed" in res.error
            hunt = (
                "import os\nppid = os.getppid()\n"
                "status = open(f'/proc/{ppid}/status').read()\n"
                "worker = int(status.split('PPid:')[1].split()[0])\nimport ctypes\nctypes.CDLL(None).kill(worker, 9)\n"
                "import time\ntime.sleep(5)"
            )
            res = sb.run(hunt)
            assert res == ExecResult(False, "", "sandbox worker died")
            assert not tr.wait_clean(), tr.leftovers()
            assert sb.run("print(2 + 2)") == ExecResult(True, "4\n", None)
            assert sentinel.poll() is None
            assert not [w for w in tr.workers if _children(w)]
        finally:
            sb.close()
