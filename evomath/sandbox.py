"""A sandbox for model-written Python code: a persistent pool of forking worker processes.

rStar-Math re-executes the whole program of a partial solution at every code step, so the search
runs thousands of short snippets; each one must be cheap (a fork, not a new interpreter) and
hostile or broken code must never harm the run.

Process layout::

    evomath process      Sandbox: a job queue, one dispatcher thread per slot (config.workers)
      └─ bwrap           where installed (root): the worker's minimal filesystem view
         └─ worker W     per slot: `python -I sandbox_worker.py` started once with a minimal
            │            environment, stdlib basics preloaded; a second one with sympy
            │            preloaded, started on first use
            └─ snippet G forked per snippet: setsid, rlimits, own uid, fresh scratch cwd, then
                         exec(compile(code, "<solution>", "exec"), {"__name__": "__main__"})

W (:mod:`evomath.sandbox_worker`, stdlib only) is started with ``subprocess`` (not
``multiprocessing``), so it inherits neither the memory of the caller (a vLLM engine, a model)
nor its environment (API keys). W compiles the snippet before forking (faster: the parser's page
faults stay in W); a snippet that fails to compile, or looks pathological, is compiled in G
instead, so all errors are reported the same way. W waits for G with a wall-clock deadline, then
SIGKILLs G's process group and sweeps its remaining descendants. bwrap wraps W once, at start-up:
snippets still fork from W, so bwrap adds nothing per snippet.

What is *contained* (enforced by the kernel, where the OS lets us; ``Sandbox.isolation`` says
which of these this machine granted, the start-up log says it once, and ``SandboxConfig.strict``
refuses to run without all of them):

* **Files a snippet can see**: with bubblewrap (``bwrap``, Debian's ``bubblewrap``) W runs in a
  minimal view: ``/usr`` and the ``/bin``, ``/lib``... links read-only, ``/etc`` a root-only
  tmpfs of links into the host's, bound read-only, a fresh ``/dev`` and ``/proc``, the private ``/tmp``, and of the
  rest only what the interpreter needs (its executable, stdlib, site-packages: numpy, sympy...)
  read-only at the paths Python uses, wherever it is installed (under ``/root``, ``/tmp``, in a
  symlinked venv). The checkout, the home directory, the run directory (``trees.jsonl`` holds the
  gold answers), MLflow's database and artifacts are simply not there. Without bwrap, W covers
  the checkout, the home directory, the caller's working directory and ``hide=`` with empty
  read-only tmpfs mounts (the interpreter's own files inside are put back): the "masked" view,
  where everything else world-readable stays readable. Without namespaces: the host's view.
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
  even to 127.0.0.1 or an abstract unix socket. System V IPC objects live in a per-snippet IPC
  namespace.
* **Temporary files and scratch space**: W mounts one tmpfs of ``scratch_mb`` on ``/tmp`` and binds
  it on ``/var/tmp``, ``/dev/shm`` and ``/run/lock``: every world-writable place is private and all
  of it together is bounded (ENOSPC beyond ``scratch_mb``, and at most 256 inodes per MiB). It is
  wiped after every snippet, so nothing a snippet writes there reaches the host or the next
  snippet; the per-snippet scratch directory (cwd, HOME, TMPDIR) is created in it. An interpreter
  that lives under ``/tmp`` is bound back into it read-only, so it never prevents the mount.
* **The status channel**: the verdict (``"timeout"``, ``"killed by signal ..."``, ``"file size
  limit"``, ``"exit code N"``) comes from W's own clock and the kernel's wait status. The one thing
  G's process reports itself is the line describing its exception (fd 3, read only after exit
  status 1, and never a verdict's words), so writing to fd 3 or any other fd says no more than
  raising an exception would.
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

Degraded modes, chosen automatically and reported (``isolation["missing"]``): without bwrap, the
masked view above. Without CAP_SYS_ADMIN (a default Docker container) there are no namespaces, so
no network isolation, no private /proc, writes to the host's ``/tmp`` and ``/dev/shm`` are only
guarded, scratch space is the host's disk (bounded per file only), world-readable files are
readable, and cleanup relies on process groups and the subreaper sweep. Without root there is no
uid switch (and bwrap is not used): snippets run as the caller's user (they could read that user's
files and, with some effort, kill the worker, which is then restarted); a supervisor process
between W and G still takes ``os.kill(os.getppid(), 9)``. Root without CAP_SETUID is the weakest
mode: fork bombs and ``kill(-1)`` through ctypes are then not contained. Linux only.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evomath.config import SandboxConfig
from evomath.errors import InputError
from evomath.sandbox_worker import remove_tree

__all__ = ["ExecResult", "Sandbox", "SandboxDegradedError", "DEFAULT_PRELOAD", "DEFAULT_HEAVY_PRELOAD"]

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
# Where the worker program lies inside bwrap's view (the checkout itself is not in it).
_VIEW_WORKER = "/run/evomath-sandbox/sandbox_worker.py"
# Where the host's /etc is bound, read-only, inside the view (/etc's entries link into it).
_HOST_ETC = "/run/host/etc"
# The checkout this module runs from, hidden from snippets; "" when evomath is installed in
# site-packages (which snippets need: it is no checkout).
_ROOT = Path(__file__).resolve().parents[1]
_PROJECT_ROOT = str(_ROOT) if (_ROOT / "pyproject.toml").is_file() or (_ROOT / ".git").exists() else ""
_MIB = 1 << 20

_log = logging.getLogger(__name__)


class SandboxDegradedError(InputError, RuntimeError):
    """``SandboxConfig.strict`` is set and this machine does not grant the full isolation."""


# --------------------------------------------------------------------------------------------
# The filesystem view: bubblewrap around each long-lived worker.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _View:
    """How workers are started: ``argv`` is bwrap and its options up to ``--`` (None: no bwrap,
    and ``why_not`` says why)."""

    argv: tuple[str, ...] | None
    version: str | None = None
    why_not: str | None = None


_views: dict[tuple, _View] = {}
_views_lock = threading.Lock()
_SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def _within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _last_line(data: bytes | str | None) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else (data or "")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _bwrap_args(bwrap: str, paths: dict[str, Any], hide: Sequence[str], scratch_mb: int) -> list[str]:
    """bwrap's options for a minimal view: the system read-only (/usr, /etc, the /bin... links),
    a fresh /proc and /dev, a bounded /tmp, and of everything else only what the interpreter
    needs (``paths``, from the worker's ``--paths``), read-only, at the paths Python uses."""
    args = [bwrap]
    system = []
    if os.path.isdir("/usr"):
        args += ["--ro-bind", "/usr", "/usr"]
        system.append("/usr")
    etc_made = []
    if os.path.isdir("/etc"):
        # /etc: a small tmpfs only root may write to, holding one symlink per host entry into a
        # read-only bind of the host's /etc. A snippet creating a file there is refused as on the
        # host (EACCES), one writing to an existing file too (EROFS); even a root snippet (weakest
        # mode) writes to a private copy. Symlinks, not one bind per entry: every snippet copies
        # the mount table into a namespace of its own, and 150 mounts cost 0.2 ms a snippet.
        args += ["--perms", "0755", "--dir", "/run", "--perms", "0755", "--dir", "/run/host",
                 "--ro-bind", "/etc", _HOST_ETC, "--size", str(_MIB), "--tmpfs", "/etc"]
        for name in sorted(os.listdir("/etc")):
            p = "/etc/" + name
            args += ["--symlink", os.readlink(p) if os.path.islink(p) else f"{_HOST_ETC}/{name}", p]
        system.append("/etc")
        etc_made = ["/run", "/run/host", _HOST_ETC]
    for d in _SYSTEM_LINKS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
            system.append(d)
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(scratch_mb * _MIB), "--tmpfs", "/tmp",
             "--dir", "/var/tmp"]
    # A checkout, home or working directory inside /usr or /etc would be in the view: cover it.
    masks = []
    for h in hide:
        real = os.path.realpath(h)
        if any(_within(real, s) and real != s for s in system) and os.path.isdir(real):
            masks.append(real)
            args += ["--tmpfs", real, "--remount-ro", real]

    def covered(p: str) -> bool:
        return any(_within(p, s) for s in system) and not any(_within(p, m) for m in masks)

    made = {"/", "/tmp", "/proc", "/dev", "/var", "/var/tmp", *etc_made, *system, *masks}

    def parents(p: str) -> list[str]:
        out, cur = [], "/"
        for comp in [c for c in p.split("/") if c][:-1]:
            cur = os.path.join(cur, comp)
            if cur not in made and not covered(cur):
                made.add(cur)
                out += ["--perms", "0755", "--dir", cur]  # bwrap's own parents would be 0700
        return out

    binds = [b for b in paths["binds"] if not covered(b)]
    for b in sorted(binds):
        args += parents(b) + ["--ro-bind", b, b]
    for link, target in paths["links"]:
        if covered(link) or any(_within(link, b) for b in binds) or link in made:
            continue
        args += parents(link) + ["--symlink", target, link]
        made.add(link)
    args += parents(_VIEW_WORKER) + ["--ro-bind", _WORKER_FILE, _VIEW_WORKER]
    return args + ["--remount-ro", "/", "--chdir", "/"]


def _find_bwrap() -> str | None:
    for d in ("/usr/bin", "/bin", "/usr/local/bin"):
        if os.access(os.path.join(d, "bwrap"), os.X_OK):
            return os.path.join(d, "bwrap")
    return shutil.which("bwrap")


def _bwrap_view(hide: Sequence[str], scratch_mb: int, modules: Sequence[str]) -> _View:
    """Plan (once per process and setting) the bwrap command line for the workers, and check it
    in a throwaway run: the interpreter starts in the view and finds the same modules as outside.
    Any failure means no bwrap (the workers then use their own namespaces), with the reason."""
    key = (tuple(hide), scratch_mb, tuple(modules), sys.executable)
    with _views_lock:
        if key not in _views:
            _views[key] = _plan_bwrap_view(hide, scratch_mb, modules)
        return _views[key]


def _plan_bwrap_view(hide: Sequence[str], scratch_mb: int, modules: Sequence[str]) -> _View:
    if os.geteuid() != 0:
        return _View(None, None, "bwrap is used only when the caller runs as root")
    bwrap = _find_bwrap()
    if bwrap is None:
        return _View(None, None, "bwrap is not installed (apt-get install bubblewrap)")
    run = dict(env=dict(_WORKER_ENV), cwd="/", capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    try:
        ver = subprocess.run([bwrap, "--version"], **run)
        version = _last_line(ver.stdout).replace("bubblewrap ", "") or "?"
        out = subprocess.run([sys.executable, "-I", _WORKER_FILE, "--paths", _PROJECT_ROOT, *modules], **run)
        paths = json.loads(out.stdout)
        argv = _bwrap_args(bwrap, paths, hide, scratch_mb)
        chk = subprocess.run(argv + ["--", sys.executable, "-I", _VIEW_WORKER, "--check", *modules], **run)
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        return _View(None, None, f"bwrap could not be prepared: {e}")
    if chk.returncode != 0:
        return _View(None, version, f"bwrap failed: {_last_line(chk.stderr) or 'exit code %d' % chk.returncode}")
    try:
        inside = json.loads(chk.stdout)["found"]
    except (ValueError, KeyError, TypeError):
        return _View(None, version, f"bwrap's view did not run the interpreter: {_last_line(chk.stderr)}")
    lost = [m for m, ok in paths["found"].items() if ok and not inside.get(m)]
    if lost:
        return _View(None, version, f"bwrap's view lacks modules found outside it: {', '.join(lost)}")
    return _View(tuple(argv), version, None)


def _missing(info: dict[str, Any]) -> list[str]:
    """What of the full isolation a worker did not get, in words (empty: nothing)."""
    missing = []
    if info.get("fs_view") != "minimal":
        why = info.get("bwrap_error") or info.get("view_error") or "namespaces are off"
        missing.append(f"a minimal filesystem view ({why})")
    if not info.get("private_tmp"):
        missing.append("a private, bounded /tmp and scratch directory")
    for key, words in (("netns", "a network namespace"), ("pidns", "PID namespaces"),
                       ("private_proc", "a private /proc"), ("ipcns", "an IPC namespace")):
        if not info.get(key):
            missing.append(words)
    if info.get("uid") is None:
        missing.append("a uid of its own (needs root with CAP_SETUID)")
    elif not info.get("nproc_limit"):
        missing.append("a process limit")
    return missing


def _describe(info: dict[str, Any]) -> str:
    view = info.get("fs_view")
    parts = [f"{view} filesystem view" + (f" (bwrap {info['bwrap']})" if view == "minimal" else "")]
    if info.get("hidden"):
        parts.append("hidden: " + ", ".join(info["hidden"]))
    parts.append(f"uid {info['uid']}" if info.get("uid") is not None else "no uid switch")
    ns = [n for n, k in (("pid", "pidns"), ("net", "netns"), ("ipc", "ipcns"), ("mount", "mountns")) if info.get(k)]
    parts.append("namespaces: " + (" ".join(ns) if ns else "none"))
    if info.get("private_proc"):
        parts.append("private /proc")
    if info.get("scratch_limit_mb"):
        parts.append(f"/tmp and scratch <= {info['scratch_limit_mb']} MiB")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# The caller's side.
# --------------------------------------------------------------------------------------------
class _WorkerDied(Exception):
    pass


class _Worker:
    """One long-lived worker process and the pipes to it. Used by one dispatcher thread only."""

    def __init__(self, spec: dict[str, Any], timeout_s: float, view: _View | None = None,
                 on_ready: Callable[[dict[str, Any]], None] | None = None):
        self.spec = spec
        self.timeout_s = timeout_s
        self.view = view if view is not None else _View(None, None, "namespaces are off")
        self.on_ready = on_ready
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] | None = None
        self.pidfd: int | None = None  # the worker inside bwrap (proc is bwrap itself)
        self.buf = bytearray()
        self.jobs = 0
        self.lock = threading.Lock()  # guards proc against stop() from another thread

    # -- process management
    def command(self) -> list[str]:
        if self.view.argv is not None:
            spec = dict(self.spec, view="bwrap")
            return [*self.view.argv, "--", sys.executable, "-I", _VIEW_WORKER, json.dumps(spec)]
        return [sys.executable, "-I", _WORKER_FILE, json.dumps(dict(self.spec, view="host"))]

    def start(self) -> None:
        with self.lock:
            if self.proc is not None:
                return
            self.buf = bytearray()
            self.info = None
            self.proc = subprocess.Popen(
                self.command(),
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
            info["bwrap"] = self.view.version if self.view.argv is not None else None
            info["bwrap_error"] = self.view.why_not
            info["missing"] = _missing(info)
            info["degraded"] = bool(info["missing"])
            if self.view.argv is not None and self.pidfd is None:
                try:
                    self.pidfd = os.pidfd_open(int(info["pid"]))
                except OSError:
                    pass
            self.info = info
            if self.on_ready is not None:
                self.on_ready(info)  # may raise (strict mode): the worker is then stopped
        return self.info

    @property
    def pid(self) -> int | None:
        """The worker's pid once it has reported ready (inside bwrap: bwrap's child), else None."""
        proc, info = self.proc, self.info
        if proc is None or info is None or proc.poll() is not None:
            return None
        return int(info["pid"])

    def _kill_inner(self, pidfd: int | None, proc: subprocess.Popen) -> None:
        """SIGKILL the worker inside bwrap (bwrap does not kill its child when it dies itself)."""
        if pidfd is not None:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except OSError:
                pass
        elif self.view.argv is not None and proc.poll() is None:
            try:  # not ready yet: bwrap's child, which cannot be reaped (recycled) while bwrap lives
                with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
                for kid in kids:
                    os.kill(kid, signal.SIGKILL)
            except (OSError, ValueError):
                pass

    def stop(self, *, force: bool = False) -> None:
        with self.lock:
            proc, self.proc, info, self.info = self.proc, None, self.info, None
            pidfd, self.pidfd = self.pidfd, None
        if proc is None:
            if pidfd is not None:
                os.close(pidfd)
            return
        try:
            if force:
                self._kill_inner(pidfd, proc)
                proc.kill()
            else:
                proc.stdin.close()  # the worker exits at end of input
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self._kill_inner(pidfd, proc)
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
            if pidfd is not None:
                os.close(pidfd)
        if force and info:
            # The worker could not clean up after itself: finish its job.
            if info.get("uid") is not None:
                _kill_uid(int(info["uid"]))
            base = info.get("scratch_base")
            if base and not info.get("private_tmp") and os.path.basename(base).startswith("evomath-sandbox-"):
                remove_tree(base)  # no recursion: a snippet may have nested 10^5 directories

    # -- one job
    def execute(self, code: str) -> ExecResult:
        try:
            self.ready()
        except (_WorkerDied, OSError, ValueError, SandboxDegradedError) as e:
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

    def __init__(self, spec: dict[str, Any], heavy: Sequence[str], timeout_s: float, view: _View | None = None,
                 on_ready: Callable[[dict[str, Any]], None] | None = None):
        self.plain = _Worker(spec, timeout_s, view, on_ready)
        self.heavy_names = tuple(heavy)
        heavy_spec = dict(spec, preload=list(spec["preload"]) + list(heavy))
        self.heavy = _Worker(heavy_spec, timeout_s, view, on_ready) if heavy else None

    def worker_for(self, code: str) -> _Worker:
        if self.heavy is not None and any(name in code for name in self.heavy_names):
            return self.heavy
        return self.plain

    def workers(self) -> list[_Worker]:
        return [w for w in (self.plain, self.heavy) if w is not None]


def _serve(jobs: queue.SimpleQueue, slot: _Slot) -> None:
    """Dispatcher thread: feeds one slot from the shared queue."""
    try:
        try:
            slot.plain.ready()  # at once: the isolation it got is logged (and checked) at start-up
        except Exception:
            slot.plain.stop(force=True)  # its first job starts a fresh one and reports the error
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
    them (``()`` turns that off). ``hide``: more directories to keep out of the snippets' view
    where it is not minimal (the checkout, the home and the working directory always are).
    ``namespaces`` / ``bwrap`` / ``switch_user``: turn kernel isolation off (for tests,
    benchmarks and debugging only; the defaults use whatever the OS permits).

    The isolation obtained is logged once at start-up (a warning when degraded) and is in
    :attr:`isolation`; with ``config.strict`` the constructor raises
    :class:`SandboxDegradedError`, naming what is missing, instead of running degraded.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        heavy_preload: Sequence[str] = DEFAULT_HEAVY_PRELOAD,
        hide: Sequence[str | os.PathLike] = (),
        namespaces: bool = True,
        bwrap: bool = True,
        switch_user: bool = True,
    ):
        if not sys.platform.startswith("linux"):
            raise RuntimeError("evomath.sandbox needs Linux (process groups, rlimits, /proc)")
        self.config = config if config is not None else SandboxConfig()
        cfg = self.config
        hidden = [h for h in (_PROJECT_ROOT, os.path.expanduser("~")) if h]
        try:
            hidden.append(os.getcwd())
        except OSError:
            pass
        hidden += [os.fspath(h) for h in hide]
        hidden = list(dict.fromkeys(os.path.realpath(h) for h in hidden if os.path.isabs(os.fspath(h))))
        spec = {
            "timeout_s": float(cfg.timeout_s),
            "memory_mb": int(cfg.memory_mb),
            "max_processes": max(1, int(cfg.max_processes)),
            "max_file_mb": int(cfg.max_file_mb),
            "max_output_chars": int(cfg.max_output_chars),
            "scratch_mb": int(cfg.scratch_mb),
            "preload": list(preload),
            "namespaces": bool(namespaces),
            "switch_user": bool(switch_user),
            "project_root": _PROJECT_ROOT or None,
            "hide": hidden,
        }
        if namespaces and bwrap:
            view = _bwrap_view(hidden, int(cfg.scratch_mb), [*preload, *heavy_preload])
        else:
            view = _View(None, None, "bwrap is off" if namespaces else "namespaces are off")
        self._view = view
        self._info: dict[str, Any] | None = None  # the first worker's isolation
        self._first_error: str | None = None
        self._log_lock = threading.Lock()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._slots = [_Slot(spec, heavy_preload, float(cfg.timeout_s), view, self._on_ready)
                       for _ in range(max(1, int(cfg.workers)))]
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
        if cfg.strict:
            iso = self.isolation
            if not iso or iso.get("missing"):
                self.close()
                what = "; ".join(iso.get("missing") or [f"a worker that starts ({self._first_error})"])
                raise SandboxDegradedError(f"sandbox.strict: refusing to run with degraded isolation, missing: {what}")

    def _on_ready(self, info: dict[str, Any]) -> None:
        """Called by each worker once ready: log the isolation once; in strict mode, refuse a
        degraded worker (its jobs then fail with "sandbox unavailable: ...")."""
        with self._log_lock:
            first = self._info is None
            self._info = info
        if first:
            if info["missing"]:
                _log.warning("sandbox isolation is degraded (%s); missing: %s%s", _describe(info),
                             "; ".join(info["missing"]),
                             "" if self.config.strict else " (sandbox.strict: true refuses to run so)")
            else:
                _log.info("sandbox isolation: %s", _describe(info))
        if self.config.strict and info["missing"]:
            raise SandboxDegradedError("strict mode, missing: " + "; ".join(info["missing"]))

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
        """What the workers got: ``fs_view`` ("minimal": bwrap's view; "masked": the host's, with
        the checkout, home and working directory hidden; "host"), ``bwrap`` (its version) or
        ``bwrap_error`` (why not), ``uid``, ``pidns``, ``netns``, ``ipcns``, ``private_tmp``,
        ``private_proc``, ``scratch_limit_mb``, ``nproc_limit``..., and ``missing``: what of the
        full isolation is not there, in words (``degraded`` when any)."""
        if self._info is None and not self._closed:
            res = self.submit("pass").result()  # through a dispatcher: no two threads on one pipe
            if self._info is None:
                self._first_error = res.error
        return dict(self._info or {})

    def worker_pids(self) -> list[int]:
        """Pids of the live worker processes that have reported ready (plain and heavy; inside
        bwrap, bwrap's child): the parents of every snippet process."""
        return [pid for s in self._slots for w in s.workers() if (pid := w.pid) is not None]
