"""The sandbox worker's helpers, in-process: its verdicts, path handling and cleanup, and the
bwrap command line the caller builds from them (the worker program itself runs in
test_sandbox.py and test_sandbox_hostile.py)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from evomath import sandbox
from evomath import sandbox_worker as W

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox needs Linux")


def _exited(code: int) -> int:
    return code << 8  # a wait status


# ------------------------------------------------------------------------------ verdicts
@pytest.mark.parametrize("finished, st, meta, expected", [
    (False, _exited(0), b"", (False, "timeout")),
    (True, None, b"", (False, "killed")),
    (True, signal.SIGXCPU, b"", (False, "timeout")),
    (True, signal.SIGXFSZ, b"", (False, "file size limit")),
    (True, signal.SIGKILL, b'{"error": "ValueError: x"}', (False, "killed by signal SIGKILL")),
    (True, signal.SIGABRT, b"", (False, "killed by signal SIGABRT")),
    (True, _exited(0), b'{"error": "ValueError: x"}', (True, None)),
    (True, _exited(1), b'{"error": "ValueError: x"}', (False, "ValueError: x")),
    (True, _exited(1), b"", (False, "exit code 1")),
    (True, _exited(3), b'{"error": "ValueError: x"}', (False, "exit code 3")),
    (True, _exited(1), b'{"error": "timeout"}', (False, "exit code 1")),
    (True, _exited(1), b'{"error": "Timeout"}', (False, "exit code 1")),
    (True, _exited(1), b'{"error": "killed by signal SIGKILL"}', (False, "exit code 1")),
    (True, _exited(1), b'{"error": "exit code 0"}', (False, "exit code 1")),
    (True, _exited(1), b'{"error": "sandbox worker died"}', (False, "exit code 1")),
    (True, _exited(1), b'{"error": "file size limit"}', (False, "exit code 1")),
    (True, _exited(1), b'{"error": "a\\nb"}', (False, "exit code 1")),
    (True, _exited(1), b'{"error": "x", "ok": true}', (False, "exit code 1")),
    (True, _exited(1), b'{"error": 3}', (False, "exit code 1")),
    (True, _exited(1), b'["timeout"]', (False, "exit code 1")),
    (True, _exited(1), b'{"error": "' + b"x" * 301 + b'"}', (False, "exit code 1")),
    (True, _exited(1), b'{"error": "timeout"}{"error": "ValueError: x"}', (False, "exit code 1")),
    (True, _exited(1), bytes(range(256)), (False, "exit code 1")),
    (True, _exited(1), b'{"error": "memory"}', (False, "memory")),  # = raising MemoryError
])
def test_verdict_comes_from_the_kernel(finished, st, meta, expected):
    assert W.verdict(finished, st, meta) == expected


def test_error_line_is_one_short_line():
    assert W.error_line(ValueError("a\nb\rc")) == "ValueError: a b c"
    assert W.error_line(MemoryError()) == "memory"
    assert len(W.error_line(ValueError("x" * 1000))) == 300
    assert W.exception_line(json.dumps({"error": W.error_line(KeyError("k"))}).encode()) == "KeyError: 'k'"


def test_signal_names_are_canonical():
    assert W.SIGNAMES[signal.SIGABRT] == "SIGABRT" and W.SIGNAMES[signal.SIGSEGV] == "SIGSEGV"


# ------------------------------------------------------------------------------ output
def test_compose_keeps_stdout_head_and_stderr_tail():
    W.configure({"timeout_s": 1, "max_output_chars": 20})
    try:
        assert W.compose("a" * 50, "", True) == "a" * 17 + "..."
        assert W.compose("", "Traceback\n  x\nValueError: boom\n", False) == "ValueError: boom"  # whole lines
        assert W.compose("out\n", "l1\nl2\nE: boom", False) == "out\nE: boom"
    finally:
        W.configure({"timeout_s": 5, "max_output_chars": 1024})


def test_precompile_leaves_the_pathological_to_the_child():
    assert isinstance(W.precompile("x = 1"), type(compile("1", "", "exec")))
    for src in ("def f(:", "x = " + "(" * 60 + "1" + ")" * 60, "a\0b", "x = 1\n" * 20_000):
        assert W.precompile(src) == src


# ------------------------------------------------------------------------------ paths
def test_resolve_follows_every_link_like_the_kernel(tmp_path):
    real = tmp_path / "real" / "lib"
    real.mkdir(parents=True)
    (tmp_path / "venv").symlink_to(tmp_path / "real")  # absolute
    (real / "python").write_text("")
    (real / "py3").symlink_to("python")  # relative
    (tmp_path / "alias").symlink_to("venv/lib/py3")
    links = []
    got = W.resolve(str(tmp_path / "alias"), links)
    assert got == os.path.realpath(tmp_path / "alias") == str(real / "python")
    assert [link for link, _ in links] == [str(tmp_path / "alias"), str(tmp_path / "venv"), str(real / "py3")]
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(OSError):
        W.resolve(str(tmp_path / "loop"), [])


def test_interpreter_paths_expose_the_interpreter_not_the_checkout(monkeypatch, tmp_path):
    checkout = tmp_path / "proj"
    (checkout / "src").mkdir(parents=True)
    monkeypatch.setattr(sys, "path", [*sys.path, str(checkout), str(checkout / "src"), str(tmp_path)])
    paths = W.interpreter_paths(str(checkout))
    binds = paths["binds"]
    assert not [b for b in binds if W.within(str(checkout), b) or W.within(b, str(checkout))], binds
    real_stdlib = os.path.realpath(os.path.dirname(os.__file__))
    assert any(W.within(real_stdlib, b) for b in binds)
    assert any(W.within(os.path.realpath(sys.executable), b) for b in binds)
    assert not [b for b in binds for o in binds if b != o and W.within(b, o)]  # a minimal cover
    # a venv inside the checkout is the interpreter's own: it stays
    monkeypatch.setattr(sys, "prefix", str(checkout / ".venv"))
    (checkout / ".venv" / "lib").mkdir(parents=True)
    monkeypatch.setattr(sys, "path", [*sys.path, str(checkout / ".venv" / "lib")])
    assert str(checkout / ".venv" / "lib") in W.interpreter_paths(str(checkout))["binds"]


def test_remove_tree_needs_no_recursion_and_follows_no_link(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else tmp_path  # tmpfs: fast
    top = base / f"evomath-remove-tree-{os.getpid()}"
    top.mkdir()
    cwd = os.getcwd()
    try:
        os.chdir(top)
        for _ in range(2500):  # deeper than the recursion limit, and than PATH_MAX as a path
            os.mkdir("d")
            os.chdir("d")
        os.symlink(str(outside), "link")
        os.mkfifo("fifo")
        open("file", "w").close()
    finally:
        os.chdir(cwd)
    (top / "dirlink").symlink_to(outside)
    W.remove_tree(str(top))
    assert not top.exists()
    assert (outside / "keep.txt").read_text() == "keep"
    W.remove_tree(str(tmp_path / "missing"))  # nothing to do, no error
    (tmp_path / "single").write_text("x")
    W.remove_tree(str(tmp_path / "single"))
    assert not (tmp_path / "single").exists()


def test_wipe_keeps_what_it_must(tmp_path):
    d = tmp_path / "tmp"
    (d / "proj" / ".venv").mkdir(parents=True)
    (d / "proj" / "stray").write_text("x")
    (d / "evomath-sandbox" / "job-1").mkdir(parents=True)
    (d / "junk").mkdir()
    (d / "junk" / "f").write_text("x")
    (d / "file").write_text("x")
    protect = {str(d / "proj"): "dir", str(d / "proj" / ".venv"): "keep", str(d / "evomath-sandbox"): "dir"}
    W.wipe(str(d), protect)
    assert sorted(os.listdir(d)) == ["evomath-sandbox", "proj"]
    assert os.listdir(d / "proj") == [".venv"] and os.listdir(d / "evomath-sandbox") == []


# ------------------------------------------------------------------------------ bwrap's command line
def test_bwrap_args_build_a_minimal_view():
    paths = {"binds": ["/root/.pyenv/versions/3.11/lib", "/root/.pyenv/versions/3.11/bin/python3.11",
                       "/opt/venv/lib/python3.11/site-packages", "/usr/lib/python3/dist-packages"],
             "links": [["/opt/venv/bin/python", "/root/.pyenv/versions/3.11/bin/python3.11"],
                       ["/root/.pyenv/versions/3.11/lib/libpython.so", "x"],  # inside a bind: exists
                       ["/usr/bin/python3", "python3.11"]]}  # inside /usr: exists
    args = sandbox._bwrap_args("/usr/bin/bwrap", paths, ["/usr/local/src/checkout", "/home/u"], 64)
    text = " ".join(args)
    assert args[0] == "/usr/bin/bwrap" and args[-4:] == ["--remount-ro", "/", "--chdir", "/"]
    assert "--ro-bind /usr /usr" in text and "--size 67108864 --tmpfs /tmp" in text
    assert "--ro-bind /root/.pyenv/versions/3.11/lib /root/.pyenv/versions/3.11/lib" in text
    assert "--ro-bind /usr/lib/python3/dist-packages" not in text  # /usr is there already
    assert "--symlink /root/.pyenv/versions/3.11/bin/python3.11 /opt/venv/bin/python" in text
    assert "libpython.so" not in text and "--symlink python3.11 /usr/bin/python3" not in text
    # every directory bwrap makes on the way is 0755 (its own would be 0700, unreachable after setuid)
    for parent in ("/root", "/root/.pyenv", "/opt", "/opt/venv", "/opt/venv/bin", "/run", "/run/evomath-sandbox"):
        assert f"--perms 0755 --dir {parent} " in text + " ", parent
    assert text.index("--dir /root ") < text.index("--dir /root/.pyenv ")
    # a checkout inside a bound system directory is covered; one elsewhere is simply not bound
    if os.path.isdir("/usr/local/src/checkout"):
        assert "--tmpfs /usr/local/src/checkout" in text
    assert "/home/u" not in text
    assert f"--ro-bind {sandbox._WORKER_FILE} {sandbox._VIEW_WORKER}" in text


def test_missing_names_what_is_not_granted():
    full = {"fs_view": "minimal", "private_tmp": True, "netns": True, "pidns": True, "private_proc": True,
            "ipcns": True, "uid": 2_000_000_001, "nproc_limit": True}
    assert sandbox._missing(full) == []
    m = sandbox._missing(dict(full, fs_view="masked", bwrap_error="bwrap is not installed (apt-get install bubblewrap)"))
    assert m == ["a minimal filesystem view (bwrap is not installed (apt-get install bubblewrap))"]
    m = sandbox._missing({"fs_view": "host", "uid": None})
    assert len(m) == 7 and m[-1].startswith("a uid of its own")
    assert "bwrap 0.8" in sandbox._describe(dict(full, bwrap="0.8.0", scratch_limit_mb=64))


def test_project_root_is_the_checkout_not_site_packages():
    assert sandbox._PROJECT_ROOT == str(Path(__file__).resolve().parents[2])  # this checkout
    # evomath installed in site-packages has no checkout to hide (_PROJECT_ROOT ""): then every
    # site-packages directory stays in the view
    sites = [os.path.realpath(p) for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    binds = W.interpreter_paths(None)["binds"]
    assert sites and all(any(W.within(site, b) for b in binds) for site in sites)


def test_worker_module_describes_its_paths(tmp_path):
    """``--paths`` is what the caller runs before building bwrap's command line."""
    import subprocess

    out = subprocess.run([sys.executable, "-I", sandbox._WORKER_FILE, "--paths", sandbox._PROJECT_ROOT, "json", "nope_x"],
                         capture_output=True, text=True, check=True, cwd="/")
    got = json.loads(out.stdout)
    assert got["found"] == {"json": True, "nope_x": False}
    assert not [b for b in got["binds"] if W.within(sandbox._PROJECT_ROOT, b)]
    assert Path(got["executable"]).exists()
