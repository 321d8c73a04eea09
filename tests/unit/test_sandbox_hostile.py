"""The hostile-snippet suite of issue 17: every snippet of ``sandbox_hostile.CATALOG`` in every
isolation mode where it must be contained, with the files to protect laid out as a real run
lays them out (a run directory and MLflow's files under the checkout, a home directory, a
directory named in ``hide=``), and once more from a copy of the project living under /tmp.

After each snippet: its own check; no file it tried to create exists on the host; the protected
files are byte-for-byte and mode-for-mode unchanged; nothing reached the test's listening
sockets; no signal reached the test process; the sentinel process lives; no process of the
snippet is left; the worker that ran it is the same and serves a normal snippet correctly.
"""

from __future__ import annotations

import collections
import glob
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import sandbox_hostile as H
from test_sandbox import Tracker, assert_healthy

from evomath.config import SandboxConfig
from evomath.sandbox import ExecResult, Sandbox, SandboxDegradedError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox needs Linux")

TIMEOUT = 1.0  # as test_sandbox.py: a loaded 2-core machine needs it for the bounded-space checks
SCRATCH_MB = 16
TOKEN = uuid.uuid4().hex[:12]
SECRET = "EVOMATH_HOSTILE_SECRET_" + uuid.uuid4().hex
CHECKOUT = Path(__file__).resolve().parents[2]
MODES = ("bwrap", "namespaces", "none")


def _config(**kw) -> SandboxConfig:
    cfg = dict(workers=2, timeout_s=TIMEOUT, memory_mb=256, max_processes=1, max_file_mb=4,
               max_output_chars=1024, scratch_mb=SCRATCH_MB)
    cfg.update(kw)
    return SandboxConfig(**cfg)


def _box(mode: str, **kw) -> Sandbox:
    return Sandbox(_config(**kw.pop("config", {})), heavy_preload=(), namespaces=mode != "none",
                   bwrap=mode == "bwrap", **kw)


def _wait_ready(sb: Sandbox, n: int) -> None:
    """Until all n plain workers have reported ready (their set-up forks probes)."""
    deadline = time.monotonic() + 60
    while len(sb.worker_pids()) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(sb.worker_pids()) == n, sb.worker_pids()


def _fingerprint(paths) -> dict:
    out = {}
    for p in paths:
        st = os.stat(p)
        out[str(p)] = (hashlib.sha256(Path(p).read_bytes()).hexdigest(), st.st_mode, st.st_uid, st.st_mtime_ns)
    return out


def _lay_out(root: Path, checkout: Path, home: Path, hidden: Path, pysecret_file: Path | None = None) -> dict:
    """The files a snippet must neither read nor change, as evomath and MLflow write them."""
    run_base = root
    run = run_base / "round-0"
    run.mkdir(parents=True)
    ctx = {"TOKEN": TOKEN, "CHECKOUT": str(checkout), "RUN": str(run), "HOME": str(home),
           "GOLD": "GOLD-" + uuid.uuid4().hex, "DBSECRET": "DB-" + uuid.uuid4().hex,
           "ARTSECRET": "ART-" + uuid.uuid4().hex, "HOMESECRET": "HOME-" + uuid.uuid4().hex,
           "HIDDENSECRET": "HIDDEN-" + uuid.uuid4().hex, "PYSECRET": 'name = "evomath"',
           "SECRET": SECRET, "SCRATCH_MB": SCRATCH_MB}
    trees = run / "trees.jsonl"
    trees.write_text(json.dumps({"id": "p0", "gold": ctx["GOLD"], "nodes": []}) + "\n")
    db = run_base / "mlflow.db"
    con = sqlite3.connect(db)
    con.execute("create table secrets(x)")
    con.execute("insert into secrets values (?)", (ctx["DBSECRET"],))
    con.commit()
    con.close()
    art = run_base / "mlruns" / "0" / uuid.uuid4().hex / "artifacts" / "trees.jsonl"
    art.parent.mkdir(parents=True)
    art.write_text(json.dumps({"gold": ctx["ARTSECRET"]}) + "\n")
    home.mkdir(parents=True, exist_ok=True)
    homefile = home / f".netrc-{TOKEN}"
    homefile.write_text(f"machine example.com password {ctx['HOMESECRET']}\n")
    hidden.mkdir(parents=True, exist_ok=True)
    hiddenfile = hidden / "trees.jsonl"
    hiddenfile.write_text(json.dumps({"gold": ctx["HIDDENSECRET"]}) + "\n")
    pyproject = pysecret_file or checkout / "pyproject.toml"
    for p in (trees, db, art, homefile, hiddenfile):
        os.chmod(p, 0o644)  # world-readable, as they are today
    for d in {run, run_base, home, hidden, art.parent}:
        os.chmod(d, 0o755)
    ctx.update(TREES=str(trees), MLDB=str(db), ARTIFACT=str(art), HOMEFILE=str(homefile),
               HOMENAME=homefile.name, HIDDENFILE=str(hiddenfile), PYPROJECT=str(pyproject))
    ctx["PROTECTED"] = [str(p) for p in (trees, db, art, homefile, hiddenfile, pyproject)]
    return ctx


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def protected():
    run_base = CHECKOUT / "runs" / f"sandbox-hostile-{TOKEN}"
    varlib = Path(f"/var/lib/evomath-sandbox-test-{TOKEN}")
    try:
        ctx = _lay_out(run_base, CHECKOUT, varlib / "home", varlib / "data")
        ctx["HIDDEN"] = str(varlib / "data")
        ctx["FINGERPRINT"] = _fingerprint(ctx["PROTECTED"])
        yield ctx
    finally:
        shutil.rmtree(run_base, ignore_errors=True)
        shutil.rmtree(varlib, ignore_errors=True)
        try:
            (CHECKOUT / "runs").rmdir()  # only if we created it and it is empty
        except OSError:
            pass


class Listeners:
    """Sockets of the test process that no snippet may reach."""

    def __init__(self):
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(16)
        self.port = self.tcp.getsockname()[1]
        self.tcp6 = None
        try:
            self.tcp6 = socket.socket(socket.AF_INET6)
            self.tcp6.bind(("::1", self.port))
            self.tcp6.listen(16)
        except OSError:
            self.tcp6 = None
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.uport = self.udp.getsockname()[1]
        self.abstract_name = f"evomath-hostile-{TOKEN}"
        self.abstract = socket.socket(socket.AF_UNIX)
        self.abstract.bind("\0" + self.abstract_name)
        self.abstract.listen(16)
        self.usock_path = f"/tmp/evomath-hostile-{TOKEN}.sock"
        self.usock = socket.socket(socket.AF_UNIX)
        self.usock.bind(self.usock_path)
        os.chmod(self.usock_path, 0o777)
        self.usock.listen(16)
        for s in self.all():
            s.setblocking(False)

    def all(self):
        return [s for s in (self.tcp, self.tcp6, self.udp, self.abstract, self.usock) if s is not None]

    def reached(self) -> list[str]:
        got = []
        for s in self.all():
            try:
                if s.type == socket.SOCK_DGRAM:
                    got.append(f"datagram {s.recv(100)!r}")
                else:
                    conn, _ = s.accept()
                    got.append(f"connection on {s.getsockname()!r}")
                    conn.close()
            except (BlockingIOError, OSError):
                pass
        return got

    def close(self):
        for s in self.all():
            s.close()
        Path(self.usock_path).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def listeners():
    ls = Listeners()
    yield ls
    ls.close()


@pytest.fixture(scope="module")
def usr2():
    """Counts SIGUSR2 reaching the test process (the snippets aim some at it)."""
    got = []
    old = signal.signal(signal.SIGUSR2, lambda *a: got.append(time.time()))
    yield got
    signal.signal(signal.SIGUSR2, old)


@pytest.fixture(scope="module")
def sentinel():
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def _not_granted(mode: str, iso: dict) -> str | None:
    """Why this machine cannot run a mode's containment checks (None: it can)."""
    if mode == "bwrap" and iso.get("fs_view") != "minimal":
        return f"bwrap unavailable: {iso.get('bwrap_error')}"
    if mode == "namespaces" and not (iso.get("fs_view") == "masked" and iso.get("pidns") and iso.get("netns")):
        return "no namespaces here (needs root with CAP_SYS_ADMIN): " + "; ".join(iso.get("missing", []))
    if iso.get("uid") is None:
        return "no uid switch here (needs root): the catalogue assumes snippets own nothing"
    return None


class Boxes:
    """One sandbox per mode, started on first use, closed at the end of the module."""

    def __init__(self, protected, home):
        self.protected, self.home = protected, home
        self.boxes: dict[str, tuple[Sandbox, Tracker] | str] = {}

    def get(self, mode: str) -> tuple[Sandbox, Tracker]:
        if mode not in self.boxes:
            old_home = os.environ.get("HOME")
            os.environ["HOME"] = self.home  # the home directory the sandbox must hide
            os.environ["EVOMATH_HOSTILE_SECRET"] = SECRET
            try:
                sb = _box(mode, hide=[self.protected["HIDDEN"]])
            finally:
                os.environ["HOME"] = old_home if old_home is not None else "/"
            tr = Tracker(sb)
            _wait_ready(sb, 2)
            tr.refresh()
            iso = sb.isolation
            why = _not_granted(mode, iso)
            if why:
                sb.close()
                self.boxes[mode] = why
            else:
                self.boxes[mode] = (sb, tr)
        box = self.boxes[mode]
        if isinstance(box, str):
            pytest.skip(box)
        return box

    def close(self):
        for box in self.boxes.values():
            if not isinstance(box, str):
                box[0].close()


@pytest.fixture(scope="module")
def boxes(protected):
    b = Boxes(protected, protected["HOME"])
    yield b
    b.close()


def _ctx(protected, listeners, sentinel, worker: int) -> dict:
    return dict(protected, PORT=listeners.port, UPORT=listeners.uport, ABSTRACT=listeners.abstract_name,
                USOCK=listeners.usock_path, CALLER=os.getpid(), CALLER_PGID=os.getpgid(0),
                SENTINEL=sentinel.pid, WORKER=worker)


PAIRS = [(mode, s.name) for mode in MODES for s in H.CATALOG if mode in s.modes]
BY_NAME = {s.name: s for s in H.CATALOG}
# snippets that run into the timeout are marked slow (make test-fast skips them)
PARAMS = [pytest.param(m, n, id=f"{m}-{n}", marks=[pytest.mark.slow] if BY_NAME[n].slow else []) for m, n in PAIRS]


# ------------------------------------------------------------------------------ the catalogue
@pytest.mark.parametrize("mode, name", PARAMS)
def test_hostile_snippet_is_contained(boxes, protected, listeners, usr2, sentinel, mode, name):
    sb, tr = boxes.get(mode)
    snip = BY_NAME[name]
    before = tr.refresh()
    ctx = _ctx(protected, listeners, sentinel, before[0])
    nice, affinity = os.getpriority(os.PRIO_PROCESS, 0), os.sched_getaffinity(0)
    absent = [H.render(p, ctx) for p in snip.absent]
    t0 = time.monotonic()
    res = sb.run(H.render(snip.code, ctx))
    elapsed = time.monotonic() - t0
    try:
        assert isinstance(res, ExecResult) and isinstance(res.output, str)
        assert len(res.output) <= 1024
        res.output.encode("utf-8")
        assert elapsed < TIMEOUT + 3, f"took {elapsed:.1f}s"
        assert not (res.error or "").startswith("sandbox"), res  # the worker itself failed
        if snip.check is not None:
            assert snip.check(res, ctx), res
        landed = [p for pat in absent for p in glob.glob(pat)]
        assert not landed, f"files reached the host: {landed}"
        assert _fingerprint(ctx["PROTECTED"]) == ctx["FINGERPRINT"], "a protected file changed"
        assert not listeners.reached(), "a snippet reached the test's sockets"
        assert not usr2, "a signal reached the test process"
        assert os.getpriority(os.PRIO_PROCESS, 0) == nice and os.sched_getaffinity(0) == affinity
        assert_healthy(sb, tr, sentinel, before)
    finally:
        for pat in absent:  # a failed containment must not leave files for the next test
            for p in glob.glob(pat):
                shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
        usr2.clear()


def test_catalogue_size_by_class():
    """The suite's own figures (printed with -s): snippets per class, and test runs per mode."""
    by_class = collections.Counter(s.cls for s in H.CATALOG)
    by_mode = collections.Counter(m for m, _ in PAIRS)
    print(f"\nhostile snippets: {len(H.CATALOG)} {dict(sorted(by_class.items()))}; runs per mode: {dict(by_mode)}")
    assert len(H.CATALOG) > 67 and set(by_class) == {
        "time", "memory", "processes", "network", "env-secrets", "signals", "worker-crash", "fs-write",
        "fs-read", "scratch", "status"}


# ------------------------------------------------------------------------ the private places
@pytest.mark.parametrize("mode", ["bwrap", "namespaces"])
def test_private_dirs_are_wiped_and_bounded(boxes, mode):
    sb, _ = boxes.get(mode)
    code = "import _io, os\nfor d in ('/tmp', '/var/tmp', '/dev/shm'):\n    _io.FileIO(d + '/left-behind', 'w').write(b'x')\nprint('ok')"
    assert sb.run_many([code] * 2) == [ExecResult(True, "ok\n", None)] * 2
    res = sb.run_many(["import os\nprint([n for d in ('/tmp', '/var/tmp', '/dev/shm') for n in os.listdir(d)])"] * 2)
    for r in res:
        assert r.ok and "left-behind" not in r.output, r
    fill = "import os\nfor i in range(64):\n    open(f'f{i}', 'wb').write(b'x' * ((4 << 20) - 1))"
    assert "No space left" in sb.run(fill).error
    # the next snippet has the whole space again
    again = "import os\nfor i in range(3):\n    open(f'f{i}', 'wb').write(b'x' * ((4 << 20) - 1))\nprint(os.statvfs('.').f_blocks * os.statvfs('.').f_frsize >> 20)"
    r = sb.run(again)
    assert r.ok and int(r.output) == SCRATCH_MB, r
    iso = sb.isolation
    assert iso["private_tmp"] and iso["scratch_limit_mb"] == SCRATCH_MB


def test_minimal_view_holds_only_the_system_and_the_interpreter(boxes, protected):
    sb, _ = boxes.get("bwrap")
    res = sb.run("import os\nprint(sorted(os.listdir('/')))")
    top = set(eval(res.output))
    assert {"usr", "etc", "proc", "dev", "tmp"} <= top
    interpreter = {p.split("/")[1] for p in [sys.prefix, sys.base_prefix, os.path.realpath(sys.executable)]}
    assert not top & ({"home", "srv", "opt", "mnt", "media", "boot", "sys", "root", "work"} - interpreter)
    res = sb.run(f"import os\nprint(os.listdir({str(CHECKOUT)!r}))")
    assert "pyproject.toml" not in res.output and "evomath" not in res.output
    res = sb.run("import evomath")  # the checkout's code is not importable either
    assert not res.ok and "ModuleNotFoundError" in res.error
    _imports_work("bwrap")


def test_masked_view_hides_checkout_home_and_named_dirs(boxes, protected):
    sb, _ = boxes.get("namespaces")
    iso = sb.isolation
    assert iso["fs_view"] == "masked"
    assert str(CHECKOUT) in iso["hidden"] and protected["HOME"] in iso["hidden"] and protected["HIDDEN"] in iso["hidden"]
    _imports_work("namespaces")


def _imports_work(mode: str) -> None:
    """Allowed packages import in the view: sympy (preloaded in the heavy worker), numpy, the stdlib."""
    with Sandbox(SandboxConfig(workers=1, timeout_s=30), namespaces=True, bwrap=mode == "bwrap") as sb:
        assert sb.isolation["fs_view"] == ("minimal" if mode == "bwrap" else "masked")
        res = sb.run("import numpy, sympy, sqlite3, ctypes, decimal\nprint(numpy.arange(3).sum(), sympy.Integer(2) ** 10)")
        assert res == ExecResult(True, "3 1024\n", None)


# --------------------------------------------------------------- degraded modes say so, strict
def test_degraded_modes_are_reported(boxes):
    sb, _ = boxes.get("none")
    iso = sb.isolation
    assert iso["degraded"] and iso["fs_view"] == "host" and not iso["private_tmp"] and iso["scratch_limit_mb"] is None
    missing = " ".join(iso["missing"])
    for words in ("minimal filesystem view", "private, bounded /tmp", "network namespace", "PID namespaces"):
        assert words in missing


@pytest.mark.parametrize("kw, words", [
    ({"namespaces": False}, "minimal filesystem view (namespaces are off)"),
    ({"bwrap": False}, "minimal filesystem view (bwrap is off)"),
    ({"namespaces": False, "switch_user": False}, "a uid of its own"),
])
def test_strict_refuses_to_run_degraded(kw, words):
    t0 = time.monotonic()
    with pytest.raises(SandboxDegradedError) as err:
        Sandbox(_config(strict=True, workers=1), heavy_preload=(), **kw)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("sandbox.strict: refusing to run with degraded isolation, missing: ")
    assert words in msg
    assert time.monotonic() - t0 < 30


def test_strict_runs_with_full_isolation(boxes):
    boxes.get("bwrap")  # skips where bwrap is unavailable
    with Sandbox(_config(strict=True, workers=1), heavy_preload=()) as sb:
        assert sb.run("print(6 * 7)") == ExecResult(True, "42\n", None)
        assert sb.isolation["missing"] == [] and not sb.isolation["degraded"]


def test_isolation_is_logged_at_start_up(caplog):
    caplog.set_level(logging.INFO, logger="evomath.sandbox")
    sb = _box("none", config={"workers": 1})
    try:
        deadline = time.monotonic() + 30
        while not [r for r in caplog.records if "sandbox isolation" in r.getMessage()] and time.monotonic() < deadline:
            time.sleep(0.02)  # no snippet submitted: the worker reports at start-up
        recs = [r for r in caplog.records if "sandbox isolation" in r.getMessage()]
        assert len(recs) == 1 and recs[0].levelno == logging.WARNING
        assert "degraded" in recs[0].getMessage() and "missing: a minimal filesystem view" in recs[0].getMessage()
    finally:
        sb.close()


# ------------------------------------------------------------------- the project under /tmp
_CHILD = textwrap.dedent('''
    import json, os, sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests"))
    import sandbox_hostile as H
    from evomath.config import SandboxConfig
    from evomath.sandbox import Sandbox
    ctx = json.load(open(sys.argv[1]))
    out = {"executable": sys.executable, "modes": {}}
    classes = ("fs-write", "fs-read", "scratch", "status", "env-secrets")
    for mode in ("bwrap", "namespaces"):
        cfg = SandboxConfig(workers=2, timeout_s=ctx["TIMEOUT"], memory_mb=256, max_processes=1, max_file_mb=4,
                            scratch_mb=ctx["SCRATCH_MB"])
        with Sandbox(cfg, heavy_preload=(), bwrap=mode == "bwrap") as sb:
            sb.run("pass")
            c = dict(ctx, CALLER=os.getpid(), CALLER_PGID=os.getpgid(0), WORKER=sb.worker_pids()[0],
                     PORT=1, UPORT=1, ABSTRACT="x", USOCK="/nonexistent", SENTINEL=1)
            snips = [s for s in H.CATALOG if s.cls in classes and mode in s.modes]
            res = sb.run_many([H.render(s.code, c) for s in snips])
            out["modes"][mode] = {"isolation": sb.isolation,
                                  "results": {s.name: [r.ok, r.output, r.error] for s, r in zip(snips, res)},
                                  "after": sb.run("print('ok')").output}
    print(json.dumps(out))
''')


def _venv_under(root: Path) -> Path:
    """A virtual environment of this interpreter under ``root`` with a copied executable, whose
    site-packages reach the real one (sympy, numpy, pydantic) through a .pth."""
    venv = root / ".venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", "--copies", str(venv)], check=True,
                   env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    site = next((venv / "lib").glob("python3*/site-packages"))
    import sysconfig

    (site / "real-site-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_project_and_interpreter_under_tmp(sentinel):
    """Issue 17's case: the checkout and its interpreter live under /tmp. Every write to /tmp,
    /var/tmp or /dev/shm by every route stays private; the run directory, MLflow's files, the
    checkout and the home directory (all under /tmp too) are out of reach."""
    if os.geteuid() != 0:
        pytest.skip("needs root (uid switch, namespaces)")
    base = Path(f"/tmp/evomath-hostile-project-{TOKEN}")
    proj, home = base / "proj", base / "home"
    try:
        proj.mkdir(parents=True)
        shutil.copytree(CHECKOUT / "evomath", proj / "evomath", ignore=shutil.ignore_patterns("__pycache__"))
        (proj / "tests").mkdir()
        shutil.copy(Path(__file__).with_name("sandbox_hostile.py"), proj / "tests")
        (proj / "pyproject.toml").write_text('[project]\nname = "evomath"\n')
        venv = _venv_under(proj)
        ctx = _lay_out(proj / "runs" / "exp", proj, home, base / "data", proj / "pyproject.toml")
        ctx.update(TIMEOUT=TIMEOUT, HIDDEN=str(base / "data"))
        fingerprint = _fingerprint(ctx["PROTECTED"])
        (base / "ctx.json").write_text(json.dumps(ctx))
        (proj / "child.py").write_text(_CHILD)
        for d in (base, proj, proj / "tests"):
            os.chmod(d, 0o755)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "PYTHONPATH": str(proj),
               "EVOMATH_HOSTILE_SECRET": SECRET}
        run = subprocess.run([str(venv / "bin" / "python"), str(proj / "child.py"), str(base / "ctx.json")],
                             cwd=proj, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        out = json.loads(run.stdout.strip().splitlines()[-1])
        assert out["executable"].startswith(str(base))
        failures, tried = [], 0
        for mode, got in out["modes"].items():
            iso = got["isolation"]
            assert iso["private_tmp"] and iso["scratch_limit_mb"] == SCRATCH_MB, iso
            assert iso["fs_view"] == ("minimal" if mode == "bwrap" else "masked") or (
                mode == "bwrap" and iso["bwrap_error"]), iso
            if mode == "namespaces":
                assert iso["fs_view"] in ("masked", "host")
            assert got["after"] == "ok\n"
            for name, (ok, output, error) in got["results"].items():
                tried += 1
                snip, r = BY_NAME[name], ExecResult(ok, output, error)
                if snip.check is not None and not snip.check(r, ctx):
                    failures.append(f"{mode} {name}: {r}")
                for pat in snip.absent:
                    landed = glob.glob(H.render(pat, ctx))
                    if landed:
                        failures.append(f"{mode} {name}: reached the host: {landed}")
                        for p in landed:
                            shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.unlink(p)
        assert _fingerprint(ctx["PROTECTED"]) == fingerprint, "a protected file changed"
        assert not failures, "\n".join(failures)
        assert tried > 300
        assert sentinel.poll() is None
    finally:
        shutil.rmtree(base, ignore_errors=True)
