"""A sandbox for model-written Python code: a persistent pool of forking worker processes.

rStar-Math re-executes the whole program of a partial solution at every code step, so the search
runs thousands of short snippets; each one must be cheap (a fork, not a new interpreter) and
hostile or broken code must never harm the run.

Process layout::

    evomath process      Sandbox: a job queue, one dispatcher thread per slot (config.workers)
      └─ worker W        per slot: `python -I` started once with a minimal environment, stdlib
         │               basics preloaded; a second one with sympy preloaded, started on first use
         └─ snippet G    forked per snippet: setsid, rlimits, own uid, fresh scratch cwd, then
                         exec(compile(code, "<solution>", "exec"), {"__name__": "__main__"})

W is started with ``subprocess`` (not ``multiprocessing``), so it inherits neither the memory of
the caller (a vLLM engine, a model) nor its environment (API keys). W compiles the snippet before
forking (faster: the parser's page faults stay in W); a snippet that fails to compile, or looks
pathological, is compiled in G instead, so all errors are reported the same way. W waits for G
with a wall-clock deadline, then SIGKILLs G's process group and sweeps its remaining descendants.

What is *contained* (enforced by the kernel, where the OS lets us; ``Sandbox.isolation`` says
which of these this machine granted):

* **Time**: the wall-clock deadline ``timeout_s`` (error ``"timeout"``), plus RLIMIT_CPU.
* **Memory**: RLIMIT_AS = ``memory_mb`` (MemoryError is reported as ``"memory"``).
* **Files**: RLIMIT_FSIZE = ``max_file_mb`` for every file, stdout and stderr included; at most
  64 open files (RLIMIT_NOFILE), which also bounds in-memory files that RLIMIT_AS does not count.
* **Processes**: when the pool runs as root, every snippet runs as an unprivileged uid of its own
  (2e9 + worker pid), so RLIMIT_NPROC = ``max_processes`` really holds (it counts threads too:
  with the default 1 a snippet can neither fork nor start threads); it cannot signal, ptrace or
  read ``/proc/<pid>/environ`` of the evomath process or of its worker, nor write root's files,
  and ``no_new_privs`` disarms setuid binaries.
* **Leftover processes**: each snippet is pid 1 of a new PID namespace, with its own ``/proc``
  (it sees only its own processes; ``os.getppid()`` is 0); when it ends the kernel kills every
  process it created, daemons that ``setsid()`` and double-fork included. (Being pid 1, a snippet
  ignores signals it sends itself while their handler is the default, e.g. SIGTERM.) Without
  namespaces, W is a child subreaper: orphans are re-parented to it and it kills them all after
  each snippet.
* **Network**: W lives in a new network namespace with no interface up: no traffic at all, not
  even to 127.0.0.1. System V IPC objects live in a per-snippet IPC namespace.
* **Temporary files**: W has a private mount namespace with fresh tmpfs mounts over the
  world-writable directories (``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/run/lock``), wiped after every
  snippet, so nothing a snippet writes there reaches the host; the per-snippet scratch directory
  (cwd, HOME, TMPDIR) is created in it and removed afterwards.
* **Environment**: W starts with a minimal environment and the snippet sees PATH/HOME/LANG (+
  single-thread BLAS settings) only; ``/proc/self/environ`` holds nothing secret either.
* **Output**: stdout/stderr are in-memory files (RLIMIT_FSIZE caps them); the result carries at
  most ``max_output_chars`` characters (stdout's head, plus stderr's tail on error); invalid UTF-8
  is replaced. stdin is ``/dev/null``, so ``input()`` raises EOFError.
* **The caller survives**: snippets cannot reach it; a worker that dies anyway (killed from
  outside, or by a snippet in the weakest mode) is restarted transparently and its job gets the
  error ``"sandbox worker died"``; a worker that stops answering is killed after timeout_s + 10 s.

What is only *guarded* (a Python-level tripwire, **not a security boundary**: ``ctypes``,
``_io.FileIO`` or a C extension bypass it): ``open``/``os.open`` for writing and the ``os``
functions that create, delete, rename or chmod files refuse paths outside the scratch directory
(PermissionError); and, only where RLIMIT_NPROC cannot work (root without the uid switch),
``os.fork``/``subprocess`` are refused and ``os.kill`` of other processes too.

Degraded modes, chosen automatically: without CAP_SYS_ADMIN (a default Docker container) there
are no namespaces, so no network isolation, writes to the host's ``/tmp`` and ``/dev/shm`` are
only guarded, and cleanup relies on process groups and the subreaper sweep. Without root there is
no uid switch: snippets run as the caller's user (they could read that user's files and, with some
effort, kill the worker, which is then restarted); a supervisor process between W and G still
takes ``os.kill(os.getppid(), 9)``. Root without CAP_SETUID is the weakest mode: fork bombs and
``kill(-1)`` through ctypes are then not contained. Linux only.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import queue
import select
import shutil
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from evomath.config import SandboxConfig

__all__ = ["ExecResult", "Sandbox", "DEFAULT_PRELOAD", "DEFAULT_HEAVY_PRELOAD"]

#: Modules every worker imports once, so snippets importing them pay nothing.
DEFAULT_PRELOAD: tuple[str, ...] = (
    "math", "cmath", "fractions", "decimal", "itertools", "functools", "collections", "re",
    "statistics", "random", "string", "heapq", "bisect", "operator", "json", "datetime", "typing",
    "numbers", "copy",
)
#: Big modules (sympy: ~0.2 s to import, ~40 MB) live in a second, lazily started worker per slot;
#: a snippet whose text names one of them goes there. Forking a bigger process costs more, so the
#: plain worker stays small for every other snippet.
DEFAULT_HEAVY_PRELOAD: tuple[str, ...] = ("sympy",)

# Seconds the caller waits for a worker beyond the snippet's own timeout before declaring it hung.
_WORKER_GRACE_S = 10.0
# Seconds a freshly started worker may take to import its preloads and report ready.
_WORKER_START_S = 60.0

_WORKER_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MPLBACKEND": "Agg",
}


@dataclass
class ExecResult:
    """What one snippet did."""

    ok: bool
    output: str  # stdout (+stderr tail on error), truncated to max_output_chars
    error: str | None  # short reason: "timeout", "memory", "exit code 1", the exception's last line


# The worker program W is evomath/sandbox_worker.py (stdlib only), run as
# ``python -I sandbox_worker.py SPEC_JSON``: isolated mode, so neither the caller's environment
# nor its sys.path (PYTHONPATH, the script's directory) reaches it.
_WORKER_FILE = str(Path(__file__).resolve().with_name("sandbox_worker.py"))


# --------------------------------------------------------------------------------------------
# The caller's side.
# --------------------------------------------------------------------------------------------
class _WorkerDied(Exception):
    pass


class _Worker:
    """One long-lived worker process and the pipes to it. Used by one dispatcher thread only."""

    def __init__(self, spec: dict[str, Any], timeout_s: float):
        self.spec = spec
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] | None = None
        self.buf = bytearray()
        self.jobs = 0
        self.lock = threading.Lock()  # guards proc against stop() from another thread

    # -- process management
    def start(self) -> None:
        with self.lock:
            if self.proc is not None:
                return
            self.buf = bytearray()
            self.info = None
            self.proc = subprocess.Popen(
                [sys.executable, "-I", _WORKER_FILE, json.dumps(self.spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,
                cwd="/",
                env=dict(_WORKER_ENV),
                close_fds=True,
                start_new_session=True,  # no terminal signals (Ctrl-C) reach the worker
            )

    def ready(self) -> dict[str, Any]:
        if self.proc is None:
            self.start()
        if self.info is None:
            line = self._readline(time.monotonic() + _WORKER_START_S)
            info = json.loads(line)
            if not info.get("ready"):
                raise _WorkerDied(f"unexpected first message from worker: {line[:200]!r}")
            self.info = info
        return self.info

    def stop(self, *, force: bool = False) -> None:
        with self.lock:
            proc, self.proc, info, self.info = self.proc, None, self.info, None
        if proc is None:
            return
        try:
            if force:
                proc.kill()
            else:
                proc.stdin.close()  # the worker exits at end of input
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5.0)
        except Exception:
            pass
        finally:
            for f in (proc.stdin, proc.stdout):
                try:
                    f.close()
                except Exception:
                    pass
        if force and info:
            # The worker could not clean up after itself: finish its job.
            if info.get("uid") is not None:
                _kill_uid(int(info["uid"]))
            base = info.get("scratch_base")
            if base and not info.get("private_tmp") and os.path.basename(base).startswith("evomath-sandbox-"):
                shutil.rmtree(base, ignore_errors=True)

    # -- one job
    def execute(self, code: str) -> ExecResult:
        try:
            self.ready()
        except (_WorkerDied, OSError, ValueError) as e:
            self.stop(force=True)
            return ExecResult(False, "", f"sandbox unavailable: {e}")
        self.jobs += 1
        job_id = self.jobs
        try:
            self.proc.stdin.write(json.dumps({"id": job_id, "code": code}).encode() + b"\n")
            self.proc.stdin.flush()
            deadline = time.monotonic() + self.timeout_s + _WORKER_GRACE_S
            while True:
                res = json.loads(self._readline(deadline))
                if res.get("id") == job_id:
                    break
        except TimeoutError:  # before OSError, its base class
            self.stop(force=True)
            self.start()
            return ExecResult(False, "", "sandbox worker unresponsive")
        except (_WorkerDied, OSError, ValueError):
            self.stop(force=True)
            self.start()  # restart now; it warms up while the caller handles this result
            return ExecResult(False, "", "sandbox worker died")
        return ExecResult(bool(res["ok"]), str(res.get("output") or ""), res.get("error"))

    def _readline(self, deadline: float) -> bytes:
        fd = self.proc.stdout.fileno()
        poller = select.poll()  # not select.select: fds may exceed FD_SETSIZE in a big process
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 1]
                return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if not poller.poll(left * 1000):
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise _WorkerDied("worker closed its pipe")
            self.buf += chunk


def _kill_uid(uid: int) -> None:
    """Kill every process of a sandbox uid (after a worker was killed without its cleanup)."""
    if os.geteuid() != 0:
        return
    prog = f"import os\nos.setgid({uid})\nos.setuid({uid})\ntry: os.kill(-1, 9)\nexcept OSError: pass"
    try:
        subprocess.run([sys.executable, "-I", "-S", "-c", prog], env=dict(_WORKER_ENV), cwd="/",
                       timeout=10, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except Exception:
        pass


class _Slot:
    """One unit of parallelism: a plain worker plus a lazily started one with the heavy preloads."""

    def __init__(self, spec: dict[str, Any], heavy: Sequence[str], timeout_s: float):
        self.plain = _Worker(spec, timeout_s)
        self.heavy_names = tuple(heavy)
        self.heavy = _Worker(dict(spec, preload=list(spec["preload"]) + list(heavy)), timeout_s) if heavy else None

    def worker_for(self, code: str) -> _Worker:
        if self.heavy is not None and any(name in code for name in self.heavy_names):
            return self.heavy
        return self.plain

    def workers(self) -> list[_Worker]:
        return [w for w in (self.plain, self.heavy) if w is not None]


def _serve(jobs: queue.SimpleQueue, slot: _Slot) -> None:
    """Dispatcher thread: feeds one slot from the shared queue."""
    try:
        while True:
            item = jobs.get()
            if item is None:
                break
            code, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                res = slot.worker_for(code).execute(code)
            except BaseException as e:  # never leave a future pending
                res = ExecResult(False, "", f"sandbox error: {e!r}")
            fut.set_result(res)
    finally:
        for w in slot.workers():
            w.stop()


def _cancel_pending(jobs: queue.SimpleQueue) -> None:
    while True:
        try:
            item = jobs.get_nowait()
        except queue.Empty:
            return
        if item is not None:
            item[1].cancel()


def _shutdown(jobs: queue.SimpleQueue, threads: list[threading.Thread], slots: list[_Slot], owner: int) -> None:
    if os.getpid() != owner:
        return  # a forked copy of the caller: the workers belong to the original process
    _cancel_pending(jobs)
    for _ in threads:
        jobs.put(None)
    for t in threads:
        if t is not threading.current_thread():
            t.join(timeout=60)
    for slot in slots:
        for w in slot.workers():
            w.stop(force=True)
    _cancel_pending(jobs)  # anything submitted while we were shutting down


class Sandbox:
    """A persistent pool of sandbox workers; see the module docstring for what is contained.

    ``config.workers`` snippets run in parallel. ``preload``: modules every worker imports once;
    ``heavy_preload``: big modules kept in a second worker per slot, used by snippets that name
    them (``()`` turns that off). ``namespaces`` / ``switch_user``: turn kernel isolation off (for
    tests and debugging only; the defaults use whatever the OS permits).
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        heavy_preload: Sequence[str] = DEFAULT_HEAVY_PRELOAD,
        namespaces: bool = True,
        switch_user: bool = True,
    ):
        if not sys.platform.startswith("linux"):
            raise RuntimeError("evomath.sandbox needs Linux (process groups, rlimits, /proc)")
        self.config = config if config is not None else SandboxConfig()
        cfg = self.config
        spec = {
            "timeout_s": float(cfg.timeout_s),
            "memory_mb": int(cfg.memory_mb),
            "max_processes": max(1, int(cfg.max_processes)),
            "max_file_mb": int(cfg.max_file_mb),
            "max_output_chars": int(cfg.max_output_chars),
            "preload": list(preload),
            "namespaces": bool(namespaces),
            "switch_user": bool(switch_user),
        }
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._slots = [_Slot(spec, heavy_preload, float(cfg.timeout_s)) for _ in range(max(1, int(cfg.workers)))]
        for slot in self._slots:
            slot.plain.start()  # the plain workers warm up in parallel; heavy ones on first use
        self._threads = [
            threading.Thread(target=_serve, args=(self._jobs, slot), name=f"evomath-sandbox-{i}", daemon=True)
            for i, slot in enumerate(self._slots)
        ]
        for t in self._threads:
            t.start()
        self._closed = False
        self._close_lock = threading.Lock()
        self._owner = os.getpid()
        self._finalizer = weakref.finalize(self, _shutdown, self._jobs, self._threads, self._slots, self._owner)

    # -- the contract
    def submit(self, code: str) -> concurrent.futures.Future[ExecResult]:
        """Queue a snippet; the future resolves to its ExecResult (it never raises)."""
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        if self._closed:
            raise RuntimeError("Sandbox is closed")
        if os.getpid() != self._owner:
            raise RuntimeError("a Sandbox cannot be used in a forked process; create one there")
        fut: concurrent.futures.Future[ExecResult] = concurrent.futures.Future()
        self._jobs.put((code, fut))
        return fut

    def run(self, code: str) -> ExecResult:
        return self.submit(code).result()

    def run_many(self, codes: Sequence[str]) -> list[ExecResult]:
        futures = [self.submit(c) for c in codes]
        return [f.result() for f in futures]

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- introspection (tests, logs)
    @property
    def isolation(self) -> dict[str, Any]:
        """What the workers could enable: uid, pidns, netns, private_tmp, private_proc, nproc_limit..."""
        info = next((w.info for s in self._slots for w in s.workers() if w.info is not None), None)
        if info is None:
            self.submit("pass").result()  # through a dispatcher: no two threads on one pipe
            info = next((w.info for s in self._slots for w in s.workers() if w.info is not None), None)
        return dict(info or {})

    def worker_pids(self) -> list[int]:
        """Pids of the live worker processes (plain and heavy)."""
        return [
            w.proc.pid
            for s in self._slots
            for w in s.workers()
            if w.proc is not None and w.proc.poll() is None
        ]
