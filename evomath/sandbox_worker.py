"""The sandbox worker W: a stdlib-only program that forks one process per snippet.

Run by :mod:`evomath.sandbox` as ``python -I sandbox_worker.py SPEC_JSON`` (never imported by the
caller at run time; importing it has no side effects, so its helpers can be tested in-process).

Protocol: one JSON line per message. The worker first sends ``{"ready": true, ...}`` (the
isolation it obtained); then, per job line ``{"id", "code"}`` from the caller, one line
``{"id", "ok", "output", "error", "seconds"}``. End of input ends it.

See :mod:`evomath.sandbox` for the process layout and what is contained.
"""

import builtins
import ctypes
import errno
import fcntl
import gc
import io
import json
import linecache
import os
import resource
import select
import signal
import struct
import sys
import tempfile
import time
import traceback
import types

SPEC: dict = {}  # set by configure(); the job spec the caller sent
LIBC = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWPID = 0x20000, 0x8000000, 0x40000000, 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
MIB = 1 << 20
NOFILE = 64
TIMEOUT = 5.0  # set by configure()
MAX_CHARS = 1024  # set by configure()
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
SNIPPET_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "MPLBACKEND": "Agg"}
SIGNAMES = {int(s): s.name for s in signal.Signals}  # the canonical names: SIGABRT, not SIGIOT
WORKER_FILE = __file__  # the co_filename of this program's frames (hidden from tracebacks)


def prctl(option, arg):
    return LIBC.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


def unshare(flags):
    return LIBC.unshare(flags) == 0


def mount(source, target, fstype, flags, data):
    enc = lambda s: None if s is None else s.encode()
    return LIBC.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) == 0


def probe(fn):
    """Run fn() in a throwaway child; True when it returned something true without raising."""
    pid = os.fork()
    if pid == 0:
        try:
            ok = bool(fn())
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, st = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(st) == 0


def pick_uid():
    """A uid no account uses: 2e9 + worker pid (unique among live workers), if the uid map has it."""
    try:
        ranges = [tuple(int(x) for x in line.split()) for line in open("/proc/self/uid_map")]
    except OSError:
        ranges = [(0, 0, 1 << 32)]
    for cand in (2_000_000_000 + os.getpid(), 65534):
        if any(inside <= cand < inside + count for inside, _, count in ranges):
            return cand
    return None


def reachable_by_others(path):
    """Whether a user that is neither owner nor group member can list path (o+x on every parent)."""
    cur = "/"
    for comp in [c for c in path.split("/") if c]:
        if not os.stat(cur).st_mode & 0o001:
            return False
        cur = os.path.join(cur, comp)
    return os.stat(cur).st_mode & 0o005 == 0o005


def expose_import_paths():
    """Make import directories usable after the uid switch even under e.g. /root (mode 0700).

    A directory fd opened now (as root) stays valid after setuid, and a path through the
    /proc/self/fd/N magic link skips the permission checks of its parents; so import paths that
    others cannot reach are rewritten to such links (in sys.path and in loaded packages' __path__).
    """
    fds, mapping = [], {}
    for entry in list(sys.path):
        if not entry or not os.path.isdir(entry):
            continue
        real = os.path.realpath(entry)
        try:
            if reachable_by_others(real) or not os.stat(real).st_mode & 0o005 == 0o005:
                continue
            fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY)
            high = fcntl.fcntl(fd, fcntl.F_DUPFD, 200)  # clear of the fds a snippet gets (0-3)
            os.close(fd)
            fd = high
        except OSError:
            continue
        fds.append(fd)
        mapping[entry] = mapping[real] = "/proc/self/fd/%d" % fd

    def remap(p):
        if not isinstance(p, str):
            return p
        for old, new in mapping.items():
            if p == old or p.startswith(old + "/"):
                return new + p[len(old):]
        return p

    if mapping:
        sys.path[:] = [remap(p) for p in sys.path]
        for mod in list(sys.modules.values()):
            path = getattr(mod, "__path__", None)
            if isinstance(path, list):
                path[:] = [remap(p) for p in path]
        sys.path_importer_cache.clear()
    return fds


# ------------------------------------------------------------------ the filesystem view
O_PATH = getattr(os, "O_PATH", 0o10000000)
MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096
# Never masked, and never hidden by a mask: the system itself (the snippet's view of these is the
# host's, read-only through the uid switch, or bwrap's minimal copy).
SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sys",
               "/dev", "/run", "/boot", "/var", "/tmp")
SCRATCH_NAME = "evomath-sandbox"


def within(path, parent):
    """path is parent or lies below it (both absolute and normalised)."""
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def resolve(path, links):
    """The real path of ``path``, resolved one component at a time like the kernel does; every
    symlink met on the way is appended to ``links`` as (where it is, what it says)."""
    done, rest, hops = "/", [c for c in path.split("/") if c], 0
    while rest:
        comp = rest.pop(0)
        if comp == ".":
            continue
        if comp == "..":
            done = os.path.dirname(done)
            continue
        cur = os.path.join(done, comp)
        if os.path.islink(cur):
            hops += 1
            if hops > 40:
                raise OSError(errno.ELOOP, "too many symlinks", path)
            target = os.readlink(cur)
            links.append((cur, target))
            rest = [c for c in target.split("/") if c] + rest
            if target.startswith("/"):
                done = "/"
        else:
            done = cur
    return done


def interpreter_paths(project_root=None):
    """What this interpreter needs to run and import, as the snippet's view must show it.

    ``binds``: real paths (directories or files) to expose read-only: sys.path entries, the
    sysconfig library paths, the executable, libpython, a venv's pyvenv.cfg. ``links``: the
    symlinks on the way to them from the paths Python uses (a venv's bin/python, a symlinked
    venv), to recreate as they are. Nothing that is or contains ``project_root`` (the checkout) is
    exposed, and nothing inside it either except the interpreter's own prefixes (a venv in the
    checkout), so an old-style editable install (a .pth naming the checkout) stays hidden."""
    import sysconfig

    wanted = [p for p in sys.path if p]
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        try:
            wanted.append(sysconfig.get_path(key))
        except KeyError:
            pass
    wanted.append(sys.executable)
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and sysconfig.get_config_var("Py_ENABLE_SHARED"):
        # libpython and the libraries shipped next to it (conda's libffi...); a system-wide
        # LIBDIR (/usr/lib/...) is under /usr, which the view has anyway
        wanted.append(libdir)
    if sys.prefix != sys.base_prefix:
        wanted.append(os.path.join(sys.prefix, "pyvenv.cfg"))
    prefixes = []
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        try:
            prefixes.append(resolve(os.path.abspath(p), []))
        except OSError:
            pass
    root = resolve(os.path.abspath(project_root), []) if project_root else None
    binds, links = [], []
    for path in wanted:
        if not os.path.isabs(path) or not os.path.exists(path):
            continue
        chain = []
        try:
            real = resolve(os.path.normpath(path), chain)
        except OSError:
            continue
        if real == "/" or (root and within(root, real)):
            continue  # would expose the checkout (or everything)
        if root and within(real, root) and not any(within(real, p) for p in prefixes if p != "/"):
            continue  # the checkout's own sources, put on sys.path by a .pth
        binds.append(real)
        links.extend(chain)
    binds = sorted(set(binds))
    binds = [b for b in binds if not any(b != o and within(b, o) for o in binds)]
    seen, uniq = set(), []
    for link, target in links:
        if link not in seen and not any(within(link, b) for b in binds):
            seen.add(link)
            uniq.append((link, target))
    return {"executable": sys.executable, "binds": binds, "links": uniq}


def make_parents(path, top, protect):
    """Create the missing directories between ``top`` and ``path`` (0755, root's)."""
    parts = [c for c in path[len(top.rstrip("/")):].split("/") if c][:-1]
    cur = top
    for comp in parts:
        cur = os.path.join(cur, comp)
        if not os.path.isdir(cur):
            os.mkdir(cur, 0o755)
            os.chmod(cur, 0o755)
        protect.setdefault(cur, "dir")


def overlay(d, size_mb, writable, binds, links):
    """Mount a fresh tmpfs on ``d`` and put back, read-only, the parts of the interpreter below
    it (``binds``, through O_PATH fds opened before they were hidden) and the symlinks on the way
    to them. Returns what a wipe must leave: {path: "dir" (wipe inside) | "keep"}."""
    inner = [b for b in binds if within(b, d) and b != d]
    fds = []
    protect = {}
    try:
        for b in inner:
            fds.append((b, os.open(b, O_PATH | os.O_CLOEXEC)))
        inodes = max(1024, 256 * int(size_mb))
        opts = "size=%dm,nr_inodes=%d,mode=%s" % (size_mb, inodes, "1777" if writable else "755")
        if not mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, opts):
            raise OSError(ctypes.get_errno(), "cannot mount a tmpfs on " + d)
        for b, fd in fds:
            make_parents(b, d, protect)
            if os.path.isdir("/proc/self/fd/%d" % fd):
                os.mkdir(b, 0o755)
            else:
                os.close(os.open(b, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
            src = "/proc/self/fd/%d" % fd
            if not mount(src, b, None, MS_BIND | MS_REC, None):
                raise OSError(ctypes.get_errno(), "cannot bind %s on %s" % (b, b))
            mount(None, b, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
            protect[b] = "keep"
        for link, target in links:
            if within(link, d) and link != d and not any(within(link, b) for b in inner):
                make_parents(link, d, protect)
                if not os.path.lexists(link):
                    os.symlink(target, link)
                protect[link] = "keep"
        if not writable:
            mount(None, d, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, opts)
    finally:
        for _, fd in fds:
            os.close(fd)
    return protect


def private_dirs(binds, links, size_mb):
    """One tmpfs of ``size_mb`` on /tmp, also bound on /var/tmp, /dev/shm and /run/lock: every
    world-writable place is private and, together with the scratch directories in it, bounded.
    Returns ({wiped dir: protect}, [the private dirs])."""
    wipes, mounted = {}, []
    for d in PRIVATE_DIRS:
        if not os.path.isdir(d) or os.path.islink(d):
            continue
        if any(within(d, b) for b in binds):
            continue  # the interpreter itself lives in it (as a whole): nothing to do safely
        try:
            if d == "/tmp" or any(within(b, d) for b in binds) or "/tmp" not in wipes:
                wipes[d] = overlay(d, size_mb, True, binds, links)
            elif not mount("/tmp", d, None, MS_BIND, None):
                continue
        except OSError:
            if d == "/tmp":
                raise  # the scratch space's home: without it nothing here is private
            continue
        mounted.append(d)
    return wipes, mounted


def mask(hide, binds, links):
    """Cover each directory of ``hide`` (the checkout, the home directory, the caller's working
    directory...) with an empty read-only tmpfs, the interpreter's own files inside put back."""
    hidden = []
    for h in hide:
        try:
            real = resolve(os.path.abspath(h), [])
        except OSError:
            continue
        if real == "/" or not os.path.isdir(real) or any(within(s, real) for s in SYSTEM_DIRS):
            continue  # never the system itself (/, /usr...) or a parent of it
        if any(within(real, s) for s in ("/proc", "/sys", "/dev", "/tmp")):
            continue  # /tmp is private already
        if any(within(real, b) for b in binds) or any(within(real, h2) for h2 in hidden):
            continue  # part of the interpreter (an installed package), or hidden already
        try:
            overlay(real, 1, False, binds, links)
        except OSError:
            continue
        hidden.append(real)
    return hidden


def remove_tree(path):
    """``rm -rf path`` without recursion, long paths or more than two open fds: a snippet may
    nest directories far deeper than Python's recursion limit or PATH_MAX. Never follows a
    symlink; errors are ignored (what is left is left)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        if not os.path.isdir(path) or os.path.islink(path):
            os.unlink(path)
            return
        top = os.open(os.path.dirname(path) or "/", flags)
    except OSError:
        return
    name = os.path.basename(path)
    try:
        cur = os.open(name, flags, dir_fd=top)
    except OSError:
        os.close(top)
        return
    names = []  # the components from path down to cur
    try:
        while True:
            sub = None
            try:
                with os.scandir(cur) as entries:
                    for e in entries:
                        try:
                            if e.is_dir(follow_symlinks=False):
                                sub = e.name
                                break
                            os.unlink(e.name, dir_fd=cur)
                        except OSError:
                            pass
            except OSError:
                pass
            if sub is not None:
                try:
                    nxt = os.open(sub, flags, dir_fd=cur)
                except OSError:
                    nxt = None
                if nxt is not None:
                    os.close(cur)
                    cur = nxt
                    names.append(sub)
                    continue
                try:
                    os.rmdir(sub, dir_fd=cur)  # not openable: try once, then give up on it
                except OSError:
                    return
                continue
            if not names:
                break
            up = os.open("..", flags & ~os.O_NOFOLLOW, dir_fd=cur)
            os.close(cur)
            cur = up
            try:
                os.rmdir(names.pop(), dir_fd=cur)
            except OSError:
                return  # something in it could not be removed: stop rather than loop
    finally:
        os.close(cur)
        try:
            os.rmdir(name, dir_fd=top)
        except OSError:
            pass
        os.close(top)


def wipe(d, protect):
    """Empty ``d`` but what ``protect`` names (recreated mount points, links, their parents)."""
    try:
        names = os.listdir(d)
    except OSError:
        return
    for n in names:
        p = os.path.join(d, n)
        kind = protect.get(p)
        if kind == "keep":
            continue
        try:
            if kind == "dir":
                wipe(p, protect)
            elif os.path.isdir(p) and not os.path.islink(p):
                remove_tree(p)
            else:
                os.unlink(p)
        except OSError:
            pass


def setup():
    info = {"pid": os.getpid(), "root": os.geteuid() == 0, "uid": None, "netns": False,
            "ipcns": False, "mountns": False, "private_tmp": False, "private_proc": False,
            "pidns": False, "subreaper": False, "fs_view": "host", "hidden": [], "private_dirs": [],
            "scratch_limit_mb": None, "view_error": None}
    for name in SPEC["preload"]:
        try:
            __import__(name)
        except BaseException:
            pass
    info["subreaper"] = prctl(PR_SET_CHILD_SUBREAPER, 1) == 0
    # Not even a process of our own uid (without the uid switch) may read our memory, our fds
    # (the protocol pipe) or ptrace us.
    prctl(PR_SET_DUMPABLE, 0)
    view = SPEC.get("view", "host")
    if view == "bwrap":
        info["fs_view"] = "minimal"  # bwrap built it: only the system, the interpreter, /tmp
    wipes = {}
    if SPEC["namespaces"] and info["root"]:
        info["netns"] = unshare(CLONE_NEWNET)
        info["ipcns"] = unshare(CLONE_NEWIPC)
        if unshare(CLONE_NEWNS):
            if mount(None, "/", None, MS_REC | MS_PRIVATE, None):  # nothing propagates to the host
                info["mountns"] = True
                try:
                    paths = interpreter_paths(SPEC.get("project_root"))
                    binds = paths["binds"]
                    wipes, info["private_dirs"] = private_dirs(binds, paths["links"], int(SPEC["scratch_mb"]))
                    if view != "bwrap":
                        info["hidden"] = mask(SPEC.get("hide", ()), binds, paths["links"])
                        info["fs_view"] = "masked"
                except OSError as e:
                    info["view_error"] = "%s" % (e,)
                info["private_tmp"] = "/tmp" in wipes
        try:
            pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            pidns_fd = None
        if pidns_fd is not None and unshare(CLONE_NEWPID):
            # Each snippet gets a fresh PID namespace: unshare before its fork, setns back after.
            if LIBC.setns(pidns_fd, CLONE_NEWPID) == 0:
                info["pidns"] = True
                info["pidns_fd"] = pidns_fd
            else:
                raise SystemExit("cannot return to our own PID namespace")
        if info["pidns"] and info["mountns"]:
            def proc_probe():
                if not unshare(CLONE_NEWPID):
                    return False
                pid = os.fork()
                if pid == 0:
                    ok = unshare(CLONE_NEWNS) and mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
                    os._exit(0 if ok and os.listdir("/proc/self") else 1)
                _, st = os.waitpid(pid, 0)
                return os.waitstatus_to_exitcode(st) == 0
            info["private_proc"] = probe(proc_probe)
    if info["private_tmp"]:
        info["scratch_limit_mb"] = int(SPEC["scratch_mb"])
    if SPEC["switch_user"] and info["root"]:
        uid = pick_uid()
        if uid is not None and probe(lambda: (os.setgroups([]), os.setgid(uid), os.setuid(uid))):
            info["uid"] = uid
    # RLIMIT_NPROC is not enforced for root: only a uid switch (or not being root) makes it work.
    info["nproc_limit"] = info["uid"] is not None or not info["root"]
    info["path_fds"] = expose_import_paths() if info["uid"] is not None else []
    if info["private_tmp"]:
        base = "/tmp/" + SCRATCH_NAME
        os.makedirs(base, exist_ok=True)
        wipes["/tmp"][base] = "dir"
    else:
        base = tempfile.mkdtemp(prefix="evomath-sandbox-")
    os.chmod(base, 0o711)
    info["scratch_base"] = base
    info["wipes"] = wipes
    gc.collect()
    gc.freeze()  # forked children then do not dirty the pages of preloaded objects
    return info


INFO: dict = {}  # what setup() obtained
DEVNULL = -1  # /dev/null, opened by start()
OUT = None  # the protocol writer (a dup of the original stdout)
KEEP_FDS = frozenset([0, 1, 2, 3])
JOBS = 0


def configure(spec):
    """Take the caller's spec (limits, preloads, what isolation to try)."""
    global SPEC, TIMEOUT, MAX_CHARS
    SPEC = spec
    TIMEOUT = float(spec["timeout_s"])
    MAX_CHARS = int(spec["max_output_chars"])


def start():
    """Set up the isolation, then make the original stdout the protocol's private channel."""
    global INFO, DEVNULL, OUT, KEEP_FDS
    os.environ.clear()  # started with a minimal environment already; make it exactly SNIPPET_ENV
    os.environ.update(SNIPPET_ENV)
    INFO = setup()
    DEVNULL = os.open("/dev/null", os.O_RDWR)
    OUT = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(DEVNULL, 1)  # nothing but the protocol writer may reach the caller's pipe
    KEEP_FDS = frozenset([0, 1, 2, 3] + list(INFO["path_fds"]))


def send(obj):
    OUT.write(json.dumps(obj).encode() + b"\n")


def clean(s):
    return s.encode("utf-8", "replace").decode("utf-8") if isinstance(s, str) else s


# ------------------------------------------------------------------ inside the snippet process G
def close_fds():
    """Close every fd but KEEP_FDS (os.closerange may loop over 65536 numbers)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in KEEP_FDS:
            try:
                os.close(fd)
            except OSError:
                pass


def count_tasks(uid):
    n = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/status" % p) as f:
                    st = f.read()
            except OSError:
                continue
            if "\nUid:\t%d\t" % uid in st:
                n += int(st.split("\nThreads:\t", 1)[1].split("\n", 1)[0])
    return n


def install_guard(scratch, block_spawn):
    """Python-level tripwire against writes outside the scratch dir (NOT a security boundary)."""
    import builtins
    real = {n: getattr(os, n) for n in ("open", "mkdir", "rmdir", "remove", "unlink", "truncate",
                                         "chmod", "chown", "lchown", "utime", "mkfifo", "mknod",
                                         "rename", "replace", "link", "symlink") if hasattr(os, n)}
    real_open, realpath, readlink, join = builtins.open, os.path.realpath, os.readlink, os.path.join
    root = realpath(scratch)
    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def inside(path, dir_fd=None):
        if isinstance(path, int):
            return True
        try:
            p = os.fsdecode(os.fspath(path))
        except TypeError:
            return True  # let the real call raise its own error
        if dir_fd is not None and not p.startswith("/"):
            try:
                p = join(readlink("/proc/self/fd/%d" % dir_fd), p)
            except OSError:
                return False
        full = realpath(p)
        return full == root or full.startswith(root + "/") or full == "/dev/null"

    def deny(path):
        raise PermissionError(errno.EACCES, "sandbox: writing outside the scratch directory is not allowed", path)

    def g_open(file, mode="r", *args, **kwargs):
        if any(c in str(mode) for c in "wax+") and not inside(file):
            deny(file)
        return real_open(file, mode, *args, **kwargs)

    def g_os_open(path, flags, *args, dir_fd=None, **kwargs):
        if flags & WRITE_FLAGS and not inside(path, dir_fd):
            deny(path)
        return real["open"](path, flags, *args, dir_fd=dir_fd, **kwargs)

    def one(name):
        fn = real[name]
        def wrapper(path, *args, dir_fd=None, **kwargs):
            if not inside(path, dir_fd):
                deny(path)
            if dir_fd is None:
                return fn(path, *args, **kwargs)
            return fn(path, *args, dir_fd=dir_fd, **kwargs)
        wrapper.__name__ = name
        return wrapper

    def two(name, check_src):
        fn = real[name]
        def wrapper(src, dst, *args, src_dir_fd=None, dst_dir_fd=None, dir_fd=None, **kwargs):
            if check_src and not inside(src, src_dir_fd if dir_fd is None else dir_fd):
                deny(src)
            if not inside(dst, dst_dir_fd if dir_fd is None else dir_fd):
                deny(dst)
            for k, v in (("dir_fd", dir_fd), ("src_dir_fd", src_dir_fd), ("dst_dir_fd", dst_dir_fd)):
                if v is not None:
                    kwargs[k] = v
            return fn(src, dst, *args, **kwargs)
        wrapper.__name__ = name
        return wrapper

    builtins.open = io.open = g_open
    os.open = g_os_open
    for n in ("mkdir", "rmdir", "remove", "unlink", "truncate", "chmod", "chown", "lchown", "utime",
              "mkfifo", "mknod"):
        if n in real:
            setattr(os, n, one(n))
    for n, check_src in (("rename", True), ("replace", True), ("link", True), ("symlink", False)):
        if n in real:
            setattr(os, n, two(n, check_src))
    if block_spawn:
        # Root without a uid switch: RLIMIT_NPROC does not hold and kill(-1, 9) would reach every
        # process on the machine. Tripwires only.
        real_kill, real_killpg, getpid, getpgid = os.kill, os.killpg, os.getpid, os.getpgid

        def g_kill(pid, sig):
            if pid not in (0, getpid(), -getpgid(0)):
                raise PermissionError(errno.EPERM, "sandbox: signalling other processes is not allowed")
            return real_kill(pid, sig)

        def g_killpg(pgid, sig):
            if pgid not in (0, getpgid(0)):
                raise PermissionError(errno.EPERM, "sandbox: signalling other processes is not allowed")
            return real_killpg(pgid, sig)

        os.kill, os.killpg = g_kill, g_killpg

        def refuse(*args, **kwargs):
            raise BlockingIOError(errno.EAGAIN, "sandbox: creating processes is not allowed")
        for n in ("fork", "forkpty", "system", "posix_spawn", "posix_spawnp", "spawnv", "spawnve",
                  "spawnvp", "spawnvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "popen"):
            if hasattr(os, n):
                setattr(os, n, refuse)
        try:
            import _posixsubprocess
            _posixsubprocess.fork_exec = refuse
        except ImportError:
            pass


def error_line(exc):
    if isinstance(exc, MemoryError):
        return "memory"
    name = type(exc).__name__
    try:
        msg = str(exc)
    except BaseException:
        msg = ""
    line = ("%s: %s" % (name, msg) if msg else name).replace("\n", " ").replace("\r", " ").strip()
    return line[:300]


def format_exc(exc):
    """The traceback as Python prints it, without this program's frames."""
    te = traceback.TracebackException(type(exc), exc, exc.__traceback__, compact=True)
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename != WORKER_FILE])
    return "".join(te.format())


def snippet(source, code, scratch, out_fd, err_fd, meta_fd, parent):
    """Runs in G: ``code`` is the compiled ``source`` (or the source when the worker did not
    compile it); ``parent`` is the pid G must be the child of (None in a PID namespace).

    Never returns: always ends in os._exit."""
    _exit = os._exit
    status = 70
    try:
        me = os.getpid()
        os.setsid()
        os.dup2(DEVNULL, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.dup2(meta_fd, 3)
        close_fds()
        if INFO["private_proc"]:
            # A /proc that shows only this snippet's processes, and System V IPC objects that die
            # with the snippet (its own IPC namespace).
            if unshare(CLONE_NEWNS | (CLONE_NEWIPC if INFO["ipcns"] else 0)):
                mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
        uid = INFO["uid"]
        cpu = int(TIMEOUT) + 1
        limits = [(resource.RLIMIT_AS, int(SPEC["memory_mb"]) * MIB),
                  (resource.RLIMIT_FSIZE, int(SPEC["max_file_mb"]) * MIB),
                  (resource.RLIMIT_CORE, 0),
                  (resource.RLIMIT_CPU, (cpu, cpu + 1)),
                  # bounds in-memory files (memfd, unlinked tmpfs files), which RLIMIT_AS does
                  # not count, to NOFILE x max_file_mb
                  (resource.RLIMIT_NOFILE, NOFILE)]
        if INFO["nproc_limit"]:
            nproc = int(SPEC["max_processes"])
            if uid is None and nproc > 1:  # not root: the limit counts all tasks of our user
                nproc += count_tasks(os.getuid())
            limits.append((resource.RLIMIT_NPROC, nproc))
        for res, val in limits:
            soft, hard = val if isinstance(val, tuple) else (val, val)
            cur_hard = resource.getrlimit(res)[1]
            if cur_hard != resource.RLIM_INFINITY:
                hard = min(hard, cur_hard)
                soft = min(soft, hard)
            resource.setrlimit(res, (soft, hard))
        os.chdir(scratch)
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it
        if parent is not None and os.getppid() != parent:
            _exit(71)  # our parent is already gone
        os.environ["HOME"] = os.environ["TMPDIR"] = scratch  # the rest is SNIPPET_ENV already
        tempfile.tempdir = scratch
        sys.dont_write_bytecode = True
        out = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                               errors="backslashreplace", line_buffering=True)
        err = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                               errors="backslashreplace", line_buffering=True)
        inp = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
        sys.stdout = sys.__stdout__ = out
        sys.stderr = sys.__stderr__ = err
        sys.stdin = sys.__stdin__ = inp
        sys.argv = ["<solution>"]
        linecache.cache["<solution>"] = (len(source), None, source.splitlines(True), "<solution>")
        install_guard(scratch, block_spawn=not INFO["nproc_limit"] and int(SPEC["max_processes"]) <= 1)
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = main
        error = None
        try:
            if not isinstance(code, types.CodeType):
                code = compile(code, "<solution>", "exec")
            exec(code, main.__dict__)
            status = 0
        except SystemExit as e:
            c = e.code
            if c is None:
                status = 0
            elif isinstance(c, int):
                status = c & 0xFF
            else:
                try:
                    print(c, file=err)
                except BaseException:
                    pass
                status = 1
        except BaseException as e:
            status = 1
            error = "exception"
            try:
                error = error_line(e)
                err.write(format_exc(e))
            except BaseException:
                pass
        for stream in (out, err):
            try:
                stream.flush()
            except BaseException:
                pass
        if os.getpid() == me:  # not from a forked copy of the snippet
            # Whatever the snippet itself wrote to fd 3 is replaced: the record says only what
            # this exception was (the worker reads it for exit status 1 alone, see verdict()).
            try:
                os.ftruncate(3, 0)
                if error is not None and status == 1:
                    os.pwrite(3, json.dumps({"error": clean(error)}).encode(), 0)
            except BaseException:
                pass
    except BaseException:
        pass
    finally:
        _exit(status)


# ------------------------------------------------------------------ the supervisor S
def supervisor(source, code, scratch, out_fd, err_fd, meta_fd, status_fd, wpid):
    """Only without uid switch and PID namespace: keeps ``os.kill(os.getppid(), 9)`` off W."""
    try:
        os.setsid()
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != wpid:
            os._exit(72)
        os.dup2(DEVNULL, 0)
        os.dup2(DEVNULL, 1)
        os.close(OUT.fileno())  # only the worker may write to the caller
        prctl(PR_SET_DUMPABLE, 0)  # its status memfd stays out of reach of G's /proc/<S>/fd
        spid = os.getpid()
        gpid = os.fork()
        if gpid == 0:
            snippet(source, code, scratch, out_fd, err_fd, meta_fd, spid)
        while True:
            try:
                _, st = os.waitpid(gpid, 0)
                break
            except InterruptedError:
                continue
        os.pwrite(status_fd, struct.pack("<i", st), 0)
        os._exit(0)
    finally:
        os._exit(73)


# ------------------------------------------------------------------ the worker W
def children():
    me = os.getpid()
    try:
        with open("/proc/%d/task/%d/children" % (me, me)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        kids = []
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    with open("/proc/%s/stat" % p) as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                            kids.append(int(p))
                except (OSError, ValueError, IndexError):
                    pass
        return kids


def sweep():
    """Kill every remaining descendant. As a subreaper, orphans of the snippet come back to us."""
    for _ in range(100000):
        kids = children()
        if not kids:
            return
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
            except OSError:
                pass
        for k in kids:
            try:
                os.waitpid(k, 0)
            except ChildProcessError:
                pass


def wait_exit(pid, timeout):
    """Wait (without reaping) until pid exits; False on timeout."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    deadline = time.monotonic() + timeout
    if fd is not None:
        try:
            p = select.poll()
            p.register(fd, select.POLLIN)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if p.poll(left * 1000):
                    return True
        finally:
            os.close(fd)
    delay = 0.0005
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    return False


def cut(s, n):
    if len(s) <= n:
        return s
    return s[: n - 3] + "..." if n > 3 else s[:n]


def compose(out, err_tail, ok):
    """stdout (head), plus the stderr tail on error, in at most MAX_CHARS characters."""
    if ok or not err_tail.strip():
        return cut(out, MAX_CHARS)
    tail = err_tail.strip("\n")
    lim = max(1, MAX_CHARS // 2) if out else MAX_CHARS
    if len(tail) > lim:
        tail = tail[-lim:]
        nl = tail.find("\n")
        if 0 <= nl < len(tail) - 1:
            tail = tail[nl + 1 :]
    if not out:
        return tail
    head = cut(out, max(0, MAX_CHARS - len(tail) - 1))
    sep = "" if head.endswith("\n") or not head else "\n"
    return (head + sep + tail)[:MAX_CHARS]


#: What only the worker decides, from the kernel's facts (its own clock, the wait status): a
#: record on the snippet's fd 3 can never produce one of these.
RESERVED_ERRORS = ("timeout", "killed", "file size limit")
RESERVED_PREFIXES = ("killed by signal", "exit code", "sandbox")


def exception_line(meta):
    """The runner's record of the snippet's exception, if it is one: a JSON object with one
    short, single-line "error" string that does not impersonate a verdict of the worker."""
    try:
        rec = json.loads(meta.decode("utf-8", "replace"))
    except ValueError:
        return None
    if not isinstance(rec, dict) or set(rec) != {"error"} or not isinstance(rec["error"], str):
        return None
    line = rec["error"].strip()
    if not line or len(line) > 300 or "\n" in line or "\r" in line:
        return None
    low = line.lower()
    if low in RESERVED_ERRORS or low.startswith(RESERVED_PREFIXES):
        return None
    return line


def verdict(finished, st, meta):
    """(ok, error) of one snippet. Time, signals and the exit code come from the worker's clock
    and the kernel's wait status; the snippet's process can add only the line describing its own
    exception, and only when it exited with status 1 (what the runner does after an exception).
    Whatever a snippet writes on fd 3 thus says no more than raising an exception would, and a
    "timeout", a signal or an exit code cannot be faked."""
    if not finished:
        return False, "timeout"
    if st is None:
        return False, "killed"
    if os.WIFSIGNALED(st):
        sig = os.WTERMSIG(st)
        if sig == signal.SIGXCPU:
            return False, "timeout"
        if sig == signal.SIGXFSZ:
            return False, "file size limit"
        return False, "killed by signal %s" % SIGNAMES.get(sig, sig)
    code = os.waitstatus_to_exitcode(st)
    if code == 0:
        return True, None
    if code == 1:
        line = exception_line(meta)
        if line is not None:
            return False, line
    return False, "exit code %d" % code


def precompile(source):
    """Compile in the worker when that is safe: the child then skips the parser's many page
    faults (each first write to a page shared with the worker copies it). Anything unusual,
    including syntax errors, is left to the child, which reports it like any other error."""
    if len(source) > 100_000 or "\0" in source:
        return source
    depth = deepest = 0
    for ch in source:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    if deepest > 50:
        return source
    try:
        return compile(source, "<solution>", "exec")
    except BaseException:
        return source


def run_job(source):
    global JOBS
    JOBS += 1
    code = precompile(source)
    scratch = os.path.join(INFO["scratch_base"], "job-%d" % JOBS)
    os.mkdir(scratch, 0o700)
    uid = INFO["uid"]
    if uid is not None:
        os.chown(scratch, uid, uid)
    supervised = not INFO["pidns"] and uid is None
    fds = [os.memfd_create(n, 0) for n in ("stdout", "stderr", "meta", "status")[: 4 if supervised else 3]]
    out_fd, err_fd, meta_fd = fds[:3]
    t0 = time.monotonic()
    if INFO["pidns"]:
        if not unshare(CLONE_NEWPID):
            raise RuntimeError("unshare(CLONE_NEWPID) failed")
        pid = os.fork()
        if pid == 0:
            snippet(source, code, scratch, out_fd, err_fd, meta_fd, None)
        if LIBC.setns(INFO["pidns_fd"], CLONE_NEWPID) != 0:
            os.kill(pid, signal.SIGKILL)
            raise SystemExit("cannot return to our own PID namespace")
    elif supervised:
        pid = os.fork()
        if pid == 0:
            supervisor(source, code, scratch, out_fd, err_fd, meta_fd, fds[3], INFO["pid"])
    else:
        pid = os.fork()
        if pid == 0:
            snippet(source, code, scratch, out_fd, err_fd, meta_fd, INFO["pid"])
    finished = wait_exit(pid, TIMEOUT)
    elapsed = time.monotonic() - t0
    for kill in (os.kill, os.killpg):  # pid is not reaped yet, so it cannot have been recycled
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass
    st = None
    while True:
        try:
            _, st = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            break
    sweep()
    try:
        if supervised:
            raw = os.pread(fds[3], 4, 0)
            st = struct.unpack("<i", raw)[0] if len(raw) == 4 else None
        out = os.pread(out_fd, 4 * MAX_CHARS + 8, 0).decode("utf-8", "replace")
        n = 4 * MAX_CHARS + 8
        err_size = os.fstat(err_fd).st_size
        err_tail = os.pread(err_fd, n, max(0, err_size - n)).decode("utf-8", "replace")
        meta = os.pread(meta_fd, 8192, 0)
    finally:
        for fd in fds:
            os.close(fd)
    remove_tree(scratch)
    for d, protect in INFO["wipes"].items():
        wipe(d, protect)
    ok, error = verdict(finished, st, meta)
    return {"ok": ok, "output": clean(compose(out, err_tail, ok)), "error": clean(error),
            "seconds": round(elapsed, 6)}


def main():
    send({k: v for k, v in INFO.items() if k not in ("pidns_fd", "path_fds", "wipes")} | {"ready": True})
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            break
        try:
            job = json.loads(line)
        except ValueError:
            continue
        try:
            res = run_job(str(job["code"]))
        except Exception as e:
            res = {"ok": False, "output": "", "error": clean("sandbox error: %r" % (e,))}
        res["id"] = job.get("id")
        send(res)


def found(names):
    """Which of these modules this interpreter can import (without importing them)."""
    import importlib.util

    out = {}
    for name in names:
        try:
            out[name] = importlib.util.find_spec(name) is not None
        except BaseException:
            out[name] = False
    return out


def describe(argv):
    """``--paths PROJECT_ROOT NAME...``: what a view must hold for this interpreter, and which
    modules it finds (the caller builds bwrap's arguments from it). ``--check NAME...``: the same
    from inside a view, after importing the C-backed stdlib modules snippets use."""
    if argv[0] == "--paths":
        out = interpreter_paths(argv[1] or None)
        out["found"] = found(argv[2:])
    else:
        import importlib

        for name in ("_ctypes", "_decimal"):  # C modules that need shared libraries (libffi...)
            importlib.import_module(name)
        out = {"found": found(argv[1:]), "executable": sys.executable, "path": sys.path}
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__" and sys.argv[1:2] in (["--paths"], ["--check"]):
    describe(sys.argv[1:])
elif __name__ == "__main__":
    configure(json.loads(sys.argv[1]))
    start()
    try:
        main()
    finally:
        sweep()
        if not INFO["private_tmp"]:
            remove_tree(INFO["scratch_base"])
