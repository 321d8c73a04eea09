"""The hostile-snippet catalogue of the sandbox tests (stdlib only: a child process that runs the
sandbox from a copy of the project under /tmp imports it too).

Each :class:`Snippet` is model-written code a policy could emit, a ``check`` of its result, the
host paths that must not exist afterwards (``absent``: glob patterns), and the isolation modes in
which it must be contained:

* ``bwrap``: full isolation (bwrap's minimal view around the worker, uid switch, namespaces);
* ``namespaces``: bwrap off, the workers' own namespaces (private /tmp, the checkout, home and
  working directory masked);
* ``none``: namespaces off (a default Docker container): uid switch, rlimits and process groups.

Snippets refer to the test's fixtures with ``<<NAME>>`` markers (:func:`render`): paths of the
files to protect, the pids of the test process, its sentinel and a worker, the ports it listens
on. Classes: time, memory, processes, network, env-secrets, signals, worker-crash, fs-write,
fs-read, scratch, status.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ALL = frozenset({"bwrap", "namespaces", "none"})
NS = frozenset({"bwrap", "namespaces"})  # needs a mount / network / PID namespace

Check = Callable[[Any, dict], bool]


@dataclass(frozen=True)
class Snippet:
    name: str
    cls: str
    code: str
    check: Check | None = None
    modes: frozenset = ALL
    absent: tuple[str, ...] = ()
    slow: bool = False  # runs into the timeout


def render(text: str, ctx: dict) -> str:
    def sub(m: re.Match) -> str:
        return str(ctx[m.group(1)])

    return re.sub(r"<<([A-Z_]+)>>", sub, text)


def _not_ok(r, ctx):
    return not r.ok


def _timeout(r, ctx):
    return r.error == "timeout"


def _no_secret(r, ctx):
    return ctx["SECRET"] not in r.output and "EVOMATH_HOSTILE_SECRET" not in r.output


CATALOG: list[Snippet] = []


def add(name, cls, code, check=None, modes=ALL, absent=(), slow=False):
    CATALOG.append(Snippet(name, cls, code, check, frozenset(modes), tuple(absent), slow))


LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"

# ------------------------------------------------------------------------------------- time
add("busy_loop", "time", "while True:\n    pass", _timeout, slow=True)
add("sleep", "time", "import time\ntime.sleep(100)", _timeout, slow=True)
add("ctypes_sleep", "time", LIBC + "libc.sleep(100)", _timeout, slow=True)
add("signal_pause", "time", "import signal\nsignal.pause()", _timeout, slow=True)
add("select_forever", "time", "import select\nselect.select([], [], [], 100)", _timeout, slow=True)
add("ignore_signals_and_spin", "time",
    "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU, signal.SIGALRM, signal.SIGUSR1):\n"
    "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass", _timeout, slow=True)
add("event_wait", "time", "import threading\nthreading.Event().wait()", _timeout, slow=True)
add("spin_in_finally", "time", "try:\n    1 / 0\nfinally:\n    while True:\n        pass", _timeout, slow=True)
add("sleep_small_steps", "time", "import time\nwhile True:\n    time.sleep(0.01)", _timeout, slow=True)
add("pipe_read_blocks", "time", "import os\nr, w = os.pipe()\nos.read(r, 1)", _timeout, slow=True)
add("regex_backtracking", "time", "import re\nre.match('(a+)+$', 'a' * 64 + 'b')", _timeout, slow=True)
add("huge_power", "time", "x = 10 ** 10 ** 9", _not_ok, slow=True)
add("atexit_sleep", "time", "import atexit, time\natexit.register(time.sleep, 100)\nprint('done')",
    lambda r, c: r.ok and r.output == "done\n")
add("del_spins_at_exit", "time", "class A:\n    def __del__(self):\n        while True:\n            pass\na = A()\nprint('done')",
    lambda r, c: r.ok and r.output == "done\n")
add("alarm_handler_loop", "time",
    "import signal\ndef h(*a):\n    while True:\n        pass\nsignal.signal(signal.SIGALRM, h)\nsignal.alarm(1)\nwhile True:\n    pass",
    _timeout, slow=True)

# ----------------------------------------------------------------------------------- memory
_memory = lambda r, c: r.error == "memory"  # noqa: E731
_bounded = lambda r, c: r.error in ("memory", "timeout")  # noqa: E731  (growth: whichever limit comes first)
add("bytearray_10gb", "memory", "x = bytearray(10 ** 10)", _memory)
add("list_growth", "memory", "a = []\nwhile True:\n    a.append(' ' * 10 ** 7)", _bounded)
add("bytes_1tb", "memory", "x = bytes(2 ** 40)", _memory)
add("str_multiply", "memory", "x = 'x' * 10 ** 10", _memory)
add("dict_growth", "memory", "d = {}\ni = 0\nwhile True:\n    d[i] = str(i) * 8\n    i += 1", _bounded)
add("mmap_8gb", "memory", "import mmap\nm = mmap.mmap(-1, 8 << 30)\nm[:] = b'x' * len(m)", _not_ok)
add("ctypes_malloc_loop", "memory",
    LIBC + "libc.malloc.restype = ctypes.c_void_p\nn = 0\nwhile True:\n    p = libc.malloc(1 << 26)\n"
    "    if not p:\n        raise MemoryError\n    ctypes.memset(p, 1, 1 << 26)\n    n += 1", _bounded)
add("numpy_huge", "memory", "import numpy\nnumpy.ones(10 ** 10)", _not_ok)
add("memfd_flood", "memory",
    "import os\nfds = []\nwhile True:\n    fd = os.memfd_create('x')\n    os.write(fd, b'x' * 2 ** 20)\n    fds.append(fd)",
    lambda r, c: not r.ok and "Too many open files" in r.error)
add("recursion_big_frames", "memory", "def f(n):\n    x = [0] * 1000\n    return f(n + 1)\nf(0)", _not_ok)
add("mlock_everything", "memory", LIBC + "print(libc.mlockall(3), ctypes.get_errno())\nx = bytearray(10 ** 9)", _not_ok)

# -------------------------------------------------------------------------------- processes
add("fork_bomb", "processes", "import os\nwhile True:\n    os.fork()", _not_ok)
add("fork_bomb_ctypes", "processes", LIBC + "while True:\n    libc.fork()", _not_ok, slow=True)
add("fork_syscall_ctypes", "processes", LIBC + "while True:\n    libc.syscall(57)", _not_ok, slow=True)
add("clone_syscall_ctypes", "processes", LIBC + "while True:\n    libc.syscall(56, 17, 0, 0, 0, 0)", _not_ok, slow=True)
add("thread_bomb", "processes",
    "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(100,), daemon=True).start()", _not_ok)
add("subprocess_sleep", "processes", "import subprocess\nsubprocess.run(['sleep', '100'])", _not_ok)
add("os_system", "processes", "import os\nr = os.system('sleep 100')\nassert r == 0, r", _not_ok)
add("posix_spawn", "processes", "import os\nos.posix_spawn('/bin/sleep', ['sleep', '100'], {})\nos.wait()", _not_ok)
add("execv_sleep", "processes", "import os\nos.execv('/bin/sleep', ['sleep', '100'])", _timeout, slow=True)
add("multiprocessing_pool", "processes",
    "import multiprocessing as mp\nwith mp.Pool(4) as p:\n    print(p.map(abs, range(10)))", _not_ok)
add("process_pool_executor", "processes",
    "from concurrent.futures import ProcessPoolExecutor\nwith ProcessPoolExecutor(2) as ex:\n    print(list(ex.map(abs, range(4))))",
    _not_ok)
add("forkpty", "processes", "import os\npid, fd = os.forkpty()\nif pid == 0:\n    os.execv('/bin/sleep', ['sleep', '100'])", _not_ok)
add("setsid_daemon", "processes",
    LIBC + "pid = libc.fork()\nif pid == 0:\n    os.setsid()\n    libc.sleep(100)\nprint(pid)", None)

# ---------------------------------------------------------------------------------- network
_unreach = lambda r, c: not r.ok  # noqa: E731
add("tcp_localhost", "network",
    "import socket\ns = socket.create_connection(('127.0.0.1', <<PORT>>), timeout=0.3)\ns.sendall(b'hello')", _unreach, NS)
add("tcp_internet", "network", "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=0.3)", _unreach, NS)
add("tcp_ipv6_localhost", "network", "import socket\nsocket.create_connection(('::1', <<PORT>>), timeout=0.3)", _unreach, NS)
add("udp_localhost", "network",
    "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'hello', ('127.0.0.1', <<UPORT>>))",
    _unreach, NS)
add("dns_lookup", "network", "import socket\nprint(socket.getaddrinfo('example.com', 80))", _unreach, NS)
add("abstract_unix_socket", "network",
    "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('\\0<<ABSTRACT>>')\ns.sendall(b'hello')", _unreach, NS)
add("unix_socket_in_tmp", "network",
    "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('<<USOCK>>')\ns.sendall(b'hello')", _unreach, NS)
add("raw_packet_socket", "network", "import socket\nsocket.socket(socket.AF_PACKET, socket.SOCK_RAW)", _not_ok)
add("only_loopback", "network", "import socket\nprint(sorted(n for _, n in socket.if_nameindex()))",
    lambda r, c: r.output.strip() in ("['lo']", "[]"), NS)
add("urllib_localhost", "network",
    "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:<<PORT>>/', timeout=0.3)", _unreach, NS)
add("netlink_route", "network",
    "import socket\ns = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)\ns.bind((0, 0))\nprint('bound')",
    lambda r, c: True, NS)

# ------------------------------------------------------------------------------ env secrets
add("environ_dump", "env-secrets", "import os\nprint(dict(os.environ))", lambda r, c: r.ok and _no_secret(r, c))
add("proc_self_environ", "env-secrets", "print(open('/proc/self/environ', 'rb').read())", _no_secret)
add("proc_caller_environ", "env-secrets", "print(open('/proc/<<CALLER>>/environ', 'rb').read())", _no_secret)
add("proc_worker_environ", "env-secrets", "print(open('/proc/<<WORKER>>/environ', 'rb').read())", _no_secret)
add("proc_init_environ", "env-secrets", "print(open('/proc/1/environ', 'rb').read())", _no_secret)
add("scan_all_environ", "env-secrets",
    "import os\nfor p in os.listdir('/proc'):\n    try:\n        print(open(f'/proc/{p}/environ', 'rb').read())\n"
    "    except OSError:\n        pass", _no_secret)
add("proc_caller_mem", "env-secrets",
    "import re\nmaps = open('/proc/<<CALLER>>/maps').read()\nm = open('/proc/<<CALLER>>/mem', 'rb')\nprint(len(maps))", _no_secret)
add("ptrace_attach_caller", "env-secrets", LIBC + "r = libc.ptrace(16, <<CALLER>>, 0, 0)\nassert r == 0, ctypes.get_errno()",
    _not_ok)
add("process_vm_readv_caller", "env-secrets",
    LIBC + "buf = ctypes.create_string_buffer(4096)\n"
    "class IOV(ctypes.Structure):\n    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]\n"
    "local = IOV(ctypes.cast(buf, ctypes.c_void_p), 4096)\nremote = IOV(0x400000, 4096)\n"
    "r = libc.process_vm_readv(<<CALLER>>, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)\nassert r > 0, ctypes.get_errno()",
    _not_ok)
add("secret_in_cmdline_of_caller", "env-secrets", "print(open('/proc/<<CALLER>>/cmdline', 'rb').read()[:200])", _no_secret)

# ---------------------------------------------------------------------------------- signals
add("kill_caller_usr2", "signals", "import os, signal\nos.kill(<<CALLER>>, signal.SIGUSR2)", None)
add("killpg_caller_usr2", "signals", "import os, signal\nos.killpg(<<CALLER_PGID>>, signal.SIGUSR2)", None)
add("kill_sentinel", "signals", "import os\nos.kill(<<SENTINEL>>, 9)", None)
add("kill_worker", "signals", "import os\nos.kill(<<WORKER>>, 9)", None)
add("kill_parent", "signals", "import os, time\nos.kill(os.getppid(), 9)\ntime.sleep(0.1)\nprint('alive')", None)
add("kill_minus_one_ctypes", "signals", LIBC + "libc.kill(-1, 9)\nprint('alive')", None)
add("kill_proc_scan", "signals",
    "import os\nfor p in os.listdir('/proc'):\n    if p.isdigit() and int(p) != os.getpid():\n        try:\n"
    "            os.kill(int(p), 9)\n        except OSError:\n            pass\nprint('done')", None)
add("pidfd_signal_caller", "signals",
    "import os, signal\nfd = os.pidfd_open(<<CALLER>>)\nsignal.pidfd_send_signal(fd, signal.SIGUSR2)", None)
add("tgkill_caller", "signals", LIBC + "r = libc.syscall(234, <<CALLER>>, <<CALLER>>, 12)\nassert r == 0, ctypes.get_errno()", None)
add("renice_caller", "signals", "import os\nos.setpriority(os.PRIO_PROCESS, <<CALLER>>, 19)", None)
add("affinity_caller", "signals", "import os\nos.sched_setaffinity(<<CALLER>>, {0})", None)
add("stop_worker", "signals", "import os, signal\nos.kill(<<WORKER>>, signal.SIGSTOP)", None)
add("kill_caller_process_group_zero", "signals", "import os, signal\nos.kill(0, signal.SIGKILL)", None)

# ----------------------------------------------------------------------------- worker crash
_any = lambda r, c: True  # noqa: E731  (the pool's health after it is the check)
add("nul_byte_in_code", "worker-crash", "print(1)\0print(2)", _not_ok)
add("lone_surrogate_in_code", "worker-crash", "print('\ud800' == '\\ud800')", _not_ok)  # UTF-8 cannot encode it
add("megabytes_of_code", "worker-crash", "x = 1\n" * 200_000 + "print(x)",
    lambda r, c: (r.ok and r.output == "1\n") or r.error in ("timeout", "memory"))
add("deep_parentheses", "worker-crash", "x = " + "(" * 100_000 + "1" + ")" * 100_000, _not_ok)
add("deep_brackets_unbalanced", "worker-crash", "[" * 200_000, _not_ok)
add("huge_int_literal", "worker-crash", "x = " + "9" * 100_000 + "\nprint(len(str(x)))", _any)
# (pid 1 of a PID namespace ignores its own SIGABRT: abort() then ends in SIGSEGV)
add("abort", "worker-crash", "import os\nos.abort()", lambda r, c: r.error in ("killed by signal SIGABRT", "killed by signal SIGSEGV"))
add("null_write", "worker-crash", "import ctypes\nctypes.memset(0, 0, 1)", lambda r, c: r.error == "killed by signal SIGSEGV")
add("c_stack_overflow_json", "worker-crash",
    "import json, sys\nsys.setrecursionlimit(10 ** 7)\njson.loads('[' * 10 ** 6 + ']' * 10 ** 6)", _not_ok)
add("stop_self", "worker-crash", "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)\nprint('resumed')",
    lambda r, c: r.ok or r.error == "timeout", slow=True)
add("stdout_raises", "worker-crash",
    "import sys\nclass W:\n    def write(self, s):\n        raise OSError('no')\n    def flush(self):\n        raise OSError('no')\n"
    "sys.stdout = W()\nprint('x')", _not_ok)
add("close_all_fds_then_raise", "worker-crash", "import os\nos.closerange(0, 1024)\nraise ValueError('after close')", _not_ok)
add("dup2_garbage_on_output", "worker-crash", "import os\nfd = os.open('/dev/null', os.O_WRONLY)\nos.dup2(fd, 1)\nos.dup2(fd, 2)\nprint('x')",
    lambda r, c: r.ok and r.output == "")
add("clear_sys_modules", "worker-crash", "import sys\nsys.modules.clear()\nraise ValueError('x')", _not_ok)
add("break_import", "worker-crash", "import builtins\nbuiltins.__import__ = None\nraise ValueError('x')", _not_ok)
add("break_os_exit", "worker-crash", "import os\nos._exit = None\nprint('x')", lambda r, c: r.ok and r.output == "x\n")
add("break_json", "worker-crash", "import json\ndef boom(*a, **k):\n    raise RuntimeError('no json')\njson.dumps = boom\nraise ValueError('x')",
    _not_ok)
add("huge_exception_message", "worker-crash", "raise ValueError('x' * 10 ** 7)",
    lambda r, c: not r.ok and r.error.startswith("ValueError") and len(r.error) <= 300)
add("recursive_exception_repr", "worker-crash",
    "class E(Exception):\n    def __str__(self):\n        return str(self)\nraise E()", _not_ok)
add("systemexit_huge", "worker-crash", "raise SystemExit(2 ** 40 + 3)", lambda r, c: r.error == "exit code 3")
add("stderr_flood_then_fail", "worker-crash", "import sys\nfor i in range(10 ** 4):\n    print('e' * 50, file=sys.stderr)\nsys.exit(1)",
    lambda r, c: r.error == "exit code 1" and len(r.output) <= 1024)
add("invalid_utf8_and_nul_output", "worker-crash", "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe\\x00ok')",
    lambda r, c: r.ok and "ok" in r.output)
add("gc_freeze_tamper", "worker-crash", "import gc\ngc.unfreeze()\ngc.collect()\nprint('ok')", lambda r, c: r.ok)
add("generator_exit_storm", "worker-crash",
    "def g():\n    while True:\n        try:\n            yield\n        except GeneratorExit:\n            pass\nx = g()\nnext(x)\nprint('ok')",
    _any)

# -------------------------------------------------------------------------- fs writes
# Every route to a new file, at every place outside the scratch directory. The write may succeed
# inside a private /tmp (bwrap, namespaces); it must never reach the host.
WRITE_TARGETS = {
    "tmp": ("/tmp", NS),
    "var_tmp": ("/var/tmp", NS),
    "dev_shm": ("/dev/shm", NS),
    "checkout": ("<<CHECKOUT>>", ALL),
    "home": ("<<HOME>>", ALL),
    "run_dir": ("<<RUN>>", ALL),
    "etc": ("/etc", ALL),
}
# route -> (code writing P, modes where even a host /tmp target is contained without namespaces)
WRITE_ROUTES = {
    "open": ("open(P, 'w').write('x')", ALL),  # the guard refuses it
    "os_open": ("import os\nos.close(os.open(P, os.O_CREAT | os.O_WRONLY, 0o644))", ALL),
    "pathlib": ("import pathlib\npathlib.Path(P).write_text('x')", ALL),
    "shutil_copy": ("import shutil\nopen('f', 'w').write('x')\nshutil.copy('f', P)", ALL),
    "os_rename": ("import os\nopen('f', 'w').write('x')\nos.rename('f', P)", ALL),
    "fileio": ("import _io\nf = _io.FileIO(P, 'w')\nf.write(b'x')\nf.close()", NS),
    "ctypes_open": (LIBC + "fd = libc.open(P.encode(), os.O_CREAT | os.O_WRONLY, 0o644)\nassert fd >= 0, ctypes.get_errno()\nos.write(fd, b'x')", NS),
    "ctypes_creat": (LIBC + "fd = libc.creat(P.encode(), 0o644)\nassert fd >= 0, ctypes.get_errno()", NS),
    "chdir_write": (LIBC + "os.chdir(os.path.dirname(P))\nfd = libc.open(os.path.basename(P).encode(), os.O_CREAT | os.O_WRONLY, 0o644)\n"
                    "assert fd >= 0, ctypes.get_errno()\nos.write(fd, b'x')", NS),
    "execv_shell": ("import os\nos.execv('/bin/sh', ['sh', '-c', 'echo x > ' + P])", NS),
    "ctypes_rename": (LIBC + "open('f', 'w').write('x')\nassert libc.rename(b'f', P.encode()) == 0, ctypes.get_errno()", NS),
    "sqlite": ("import sqlite3\nsqlite3.connect(P).execute('create table t(x)')", NS),
    "ctypes_mkfifo": (LIBC + "assert libc.mkfifo(P.encode(), 0o666) == 0, ctypes.get_errno()", NS),
    "ctypes_mkdir": (LIBC + "assert libc.mkdir(P.encode(), 0o777) == 0, ctypes.get_errno()", NS),
    "ctypes_symlink_to_root_file": (LIBC + "assert libc.symlink(b'/etc/passwd', P.encode()) == 0, ctypes.get_errno()", NS),
    "ctypes_hardlink_root_file": (LIBC + "assert libc.link(b'/etc/passwd', P.encode()) == 0, ctypes.get_errno()", NS),
    "unix_socket_bind": ("import socket\nsocket.socket(socket.AF_UNIX).bind(P)", NS),
    "tempfile_in_dir": ("import os, tempfile\nfd, name = tempfile.mkstemp(dir=os.path.dirname(P), prefix=os.path.basename(P))", ALL),
    "proc_self_root": ("import _io\n_io.FileIO('/proc/self/root' + P, 'w').write(b'x')", NS),
}
for _t, (_dir, _tmodes) in WRITE_TARGETS.items():
    for _r, (_code, _rmodes) in WRITE_ROUTES.items():
        _path = f"{_dir}/evomath-escape-<<TOKEN>>-{_r}"
        _modes = ALL if _tmodes == ALL else _rmodes
        add(f"write_{_t}_{_r}", "fs-write", f"P = {_path!r}\n" + _code, None, _modes, absent=(_path + "*",))

# modifications of files that exist (the run's trees, MLflow's database, the checkout)
_unchanged = lambda r, c: True  # noqa: E731  (the test compares the files before and after)
add("append_trees_fileio", "fs-write", "import _io\n_io.FileIO('<<TREES>>', 'a').write(b'{\"gold\": \"0\"}')", _unchanged)
add("truncate_mlflow_db", "fs-write", LIBC + "assert libc.truncate(b'<<MLDB>>', 0) == 0, ctypes.get_errno()", _unchanged)
add("chmod_checkout_file", "fs-write", LIBC + "assert libc.chmod(b'<<PYPROJECT>>', 0o777) == 0, ctypes.get_errno()", _unchanged)
add("unlink_checkout_file", "fs-write", LIBC + "assert libc.unlink(b'<<PYPROJECT>>') == 0, ctypes.get_errno()", _unchanged)
add("rename_trees", "fs-write", LIBC + "assert libc.rename(b'<<TREES>>', b'<<TREES>>.x') == 0, ctypes.get_errno()", _unchanged)
add("utime_mlflow_db", "fs-write", LIBC + "assert libc.utime(b'<<MLDB>>', None) == 0, ctypes.get_errno()", _unchanged)

# ---------------------------------------------------------------------------------- fs reads
# World-readable files the snippet must not see: the run's trees (gold answers), MLflow's
# database and artifacts, the checkout, the home directory, a directory named in hide=.
READ_FILES = {
    "trees": ("<<TREES>>", "<<GOLD>>"),
    "mlflow_db": ("<<MLDB>>", "<<DBSECRET>>"),
    "mlflow_artifact": ("<<ARTIFACT>>", "<<ARTSECRET>>"),
    "checkout": ("<<PYPROJECT>>", "<<PYSECRET>>"),
    "home": ("<<HOMEFILE>>", "<<HOMESECRET>>"),
    "hidden_dir": ("<<HIDDENFILE>>", "<<HIDDENSECRET>>"),
}
READ_ROUTES = {
    "open": "print(open(P, errors='replace').read())",
    "fileio": "import _io\nprint(_io.FileIO(P).read())",
    "ctypes": LIBC + "fd = libc.open(P.encode(), os.O_RDONLY)\nassert fd >= 0, ctypes.get_errno()\nprint(os.read(fd, 1 << 20))",
    "execv_cat": "import os\nos.execv('/bin/cat', ['cat', P])",
    "proc_self_root": "print(open('/proc/self/root' + P, errors='replace').read())",
}


def _hides(secret_key):
    return lambda r, c: c[secret_key] not in r.output


for _f, (_p, _s) in READ_FILES.items():
    for _r, _code in READ_ROUTES.items():
        add(f"read_{_f}_{_r}", "fs-read", f"P = '{_p}'\n" + _code, _hides(_s[2:-2]), NS)
add("read_mlflow_db_sqlite", "fs-read",
    "import sqlite3\nprint(sqlite3.connect('file:<<MLDB>>?mode=ro', uri=True).execute('select * from secrets').fetchall())",
    _hides("DBSECRET"), NS)
add("find_trees_by_walking", "fs-read",
    "import os\nfor top in ('/work', '/root', '/home', '/tmp', '/var', '/srv', '/opt', '/mnt', '<<CHECKOUT>>'):\n"
    "    for d, dirs, files in os.walk(top):\n        if 'trees.jsonl' in files:\n"
    "            print(open(os.path.join(d, 'trees.jsonl'), errors='replace').read())",
    _hides("GOLD"), NS)
add("glob_run_dirs", "fs-read",
    "import glob\nfor p in glob.glob('<<CHECKOUT>>/**/*.jsonl', recursive=True):\n    print(p, open(p).read())",
    _hides("GOLD"), NS)
add("read_via_caller_cwd", "fs-read", "print(open('/proc/<<CALLER>>/cwd/pyproject.toml').read())", _hides("PYSECRET"), NS)
add("read_via_caller_root", "fs-read", "print(open('/proc/<<CALLER>>/root<<TREES>>').read())", _hides("GOLD"), NS)
add("read_via_worker_root", "fs-read", "print(open('/proc/<<WORKER>>/root<<TREES>>').read())", _hides("GOLD"), NS)
add("read_via_path_fd_dotdot", "fs-read",
    "import os\nfor fd in os.listdir('/proc/self/fd'):\n    base = f'/proc/self/fd/{fd}'\n"
    "    for up in range(1, 8):\n        p = base + '/..' * up + '<<TREES>>'\n        try:\n            print(open(p).read())\n"
    "        except OSError:\n            pass", _hides("GOLD"), NS)
add("list_checkout", "fs-read", "import os\nprint(os.listdir('<<CHECKOUT>>'))", lambda r, c: "pyproject.toml" not in r.output, NS)
add("list_home", "fs-read", "import os\nprint(os.listdir('<<HOME>>'))", lambda r, c: c["HOMENAME"] not in r.output, NS)

# ---------------------------------------------------------------------------------- scratch


def _count(r, word):
    m = re.search(word + r" (\d+)", r.output)
    return int(m.group(1)) if m else 10 ** 9

add("fill_scratch", "scratch",
    "import os\nn = 0\ntry:\n    while True:\n        with open(f'f{n}', 'wb') as f:\n            f.write(b'x' * ((4 << 20) - 1))\n"
    "        n += 1\nfinally:\n    print('MiB', n * 4)\n",
    lambda r, c: not r.ok and "No space left" in r.error and _count(r, "MiB") <= c["SCRATCH_MB"], NS)
add("fill_tmp", "scratch",
    "import os\nn = 0\ntry:\n    while True:\n        with open(f'/tmp/evomath-fill-{n}', 'wb') as f:\n            f.write(b'x' * ((4 << 20) - 1))\n"
    "        n += 1\nfinally:\n    print('MiB', n * 4)\n", lambda r, c: not r.ok and _count(r, "MiB") <= c["SCRATCH_MB"], NS)
add("fill_dev_shm", "scratch",
    "import _io\nn = 0\ntry:\n    while True:\n        _io.FileIO(f'/dev/shm/evomath-fill-{n}', 'w').write(b'x' * ((4 << 20) - 1))\n        n += 1\n"
    "finally:\n    print('MiB', n * 4)\n",
    lambda r, c: not r.ok and _count(r, "MiB") <= c["SCRATCH_MB"], NS)
add("fill_var_tmp", "scratch",
    "import _io\nn = 0\ntry:\n    while True:\n        _io.FileIO(f'/var/tmp/evomath-fill-{n}', 'w').write(b'x' * ((4 << 20) - 1))\n        n += 1\n"
    "finally:\n    print('MiB', n * 4)\n",
    lambda r, c: not r.ok and _count(r, "MiB") <= c["SCRATCH_MB"], NS)
add("inode_exhaustion", "scratch",
    "n = 0\ntry:\n    while True:\n        open(f'e{n}', 'w').close()\n        n += 1\nfinally:\n    print('files', n)\n",
    lambda r, c: not r.ok and _count(r, "files") <= 256 * c["SCRATCH_MB"], NS)
add("deep_directories", "scratch",
    "import os\nn = 0\ntry:\n    while True:\n        os.mkdir('d')\n        os.chdir('d')\n        n += 1\nfinally:\n    print('dirs', n)\n",
    _not_ok, NS)
add("unlinked_open_files", "scratch",
    "import os\nfds = []\nwhile True:\n    fd = os.open(f'u{len(fds)}', os.O_CREAT | os.O_RDWR)\n    os.unlink(f'u{len(fds)}')\n"
    "    os.write(fd, b'x' * ((4 << 20) - 1))\n    fds.append(fd)", _not_ok, NS)
add("fallocate_huge", "scratch",
    "import os\nfd = os.open('big', os.O_CREAT | os.O_RDWR)\nos.posix_fallocate(fd, 0, 1 << 40)", _not_ok)
add("sparse_far_offset", "scratch",
    "import os\nfd = os.open('sparse', os.O_CREAT | os.O_RDWR)\nos.pwrite(fd, b'x', 1 << 40)", _not_ok)
add("many_small_writes_then_ok", "scratch",
    "for i in range(100):\n    open(f's{i}', 'w').write('x' * 1000)\nprint('ok')", lambda r, c: r.ok and r.output == "ok\n")

# ----------------------------------------------------------------------------------- status
# fd 3 is the runner's record of the snippet's exception. A snippet writing there, or anywhere
# else, must not change what the worker reports: timeouts, signals and exit codes are the kernel's.
_FD3 = "import os\nos.write(3, {rec!r})\n"
add("fd3_fake_timeout_exit1", "status", _FD3.format(rec=b'{"error": "timeout"}') + "os._exit(1)",
    lambda r, c: r.error == "exit code 1")
add("fd3_fake_timeout_exit0", "status", _FD3.format(rec=b'{"error": "timeout"}') + "os._exit(0)",
    lambda r, c: r.ok and r.error is None)
add("fd3_fake_signal", "status", _FD3.format(rec=b'{"error": "killed by signal SIGKILL"}') + "os._exit(1)",
    lambda r, c: r.error == "exit code 1")
add("fd3_fake_sandbox_error", "status", _FD3.format(rec=b'{"error": "sandbox worker died"}') + "os._exit(1)",
    lambda r, c: r.error == "exit code 1")
add("fd3_fake_file_size", "status", _FD3.format(rec=b'{"error": "file size limit"}') + "os._exit(1)",
    lambda r, c: r.error == "exit code 1")
add("fd3_fake_exit_code", "status", _FD3.format(rec=b'{"error": "exit code 0"}') + "os._exit(1)",
    lambda r, c: r.error == "exit code 1")
add("fd3_fake_then_real_exception", "status", _FD3.format(rec=b'{"error": "timeout"}') + "raise ValueError('real')",
    lambda r, c: r.error == "ValueError: real")
add("fd3_garbage", "status", _FD3.format(rec=bytes(range(256))) + "os._exit(1)", lambda r, c: r.error == "exit code 1")
add("fd3_multiline", "status", _FD3.format(rec=b'{"error": "x\\ny"}') + "os._exit(1)", lambda r, c: r.error == "exit code 1")
add("fd3_extra_keys", "status", _FD3.format(rec=b'{"error": "x", "ok": true}') + "os._exit(1)",
    lambda r, c: r.error == "exit code 1")
add("fd3_huge", "status", "import os\nos.write(3, b'{\"error\": \"' + b'x' * (1 << 20) + b'\"}')\nos._exit(1)",
    lambda r, c: r.error == "exit code 1")
add("fd3_record_exit2", "status", _FD3.format(rec=b'{"error": "ValueError: fake"}') + "os._exit(2)",
    lambda r, c: r.error == "exit code 2")
add("fd3_closed_then_raise", "status", "import os\nos.close(3)\nraise ValueError('real')", lambda r, c: r.error == "exit code 1")
add("fd3_replaced_by_pipe", "status", "import os\nr, w = os.pipe()\nos.dup2(w, 3)\nraise ValueError('real')",
    lambda r, c: r.error == "exit code 1")
add("fd3_via_stdout", "status", "import os, sys\nos.dup2(3, 1)\nprint('{\"error\": \"timeout\"}', flush=True)\nos._exit(1)",
    lambda r, c: r.error == "exit code 1")
add("exception_named_timeout", "status", "class timeout(Exception):\n    pass\nraise timeout", lambda r, c: r.error == "exit code 1")
add("exception_named_like_signal", "status",
    "E = type('killed by signal SIGKILL', (Exception,), {})\nraise E()", lambda r, c: r.error == "exit code 1")
add("systemexit_timeout_text", "status", "raise SystemExit('timeout')",
    lambda r, c: r.error == "exit code 1" and "timeout" in r.output)
add("fake_protocol_on_every_fd", "status",
    "import os\nline = b'{\"id\": 1, \"ok\": true, \"output\": \"42\", \"error\": null}\\n'\nfor fd in range(256):\n    try:\n"
    "        os.write(fd, line * 100)\n    except OSError:\n        pass\nos._exit(5)", lambda r, c: r.error == "exit code 5")
add("write_worker_protocol_pipe", "status",
    "import os\nfor n in range(64):\n    try:\n        fd = os.open(f'/proc/<<WORKER>>/fd/{n}', os.O_WRONLY)\n"
    "        os.write(fd, b'{\"id\": 1, \"ok\": true, \"output\": \"\", \"error\": null}\\n')\n    except OSError:\n        pass\nos._exit(4)",
    lambda r, c: r.error == "exit code 4")
add("write_parent_fds", "status",
    "import os\nfor n in range(64):\n    try:\n        fd = os.open(f'/proc/{os.getppid()}/fd/{n}', os.O_WRONLY)\n"
    "        os.write(fd, b'{\"error\": \"timeout\"}')\n    except OSError:\n        pass\nos._exit(6)",
    lambda r, c: r.error == "exit code 6")
add("kill_self_after_fd3", "status", _FD3.format(rec=b'{"error": "ValueError: x"}') + "import signal\nos.kill(os.getpid(), signal.SIGKILL)\nos._exit(9)",
    lambda r, c: r.error in ("exit code 9", "killed by signal SIGKILL"))
add("stdout_looks_like_protocol", "status", "print('{\"id\": 99, \"ok\": false, \"error\": \"timeout\"}')",
    lambda r, c: r.ok and r.error is None and '"id": 99' in r.output)
