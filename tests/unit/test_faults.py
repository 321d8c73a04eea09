"""Named fault points: nothing happens unless EVOMATH_FAULT names the point; then SIGKILL at the N-th hit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from evomath import faults

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
from evomath.faults import fault_point
for i in range(1, 4):
    fault_point("other")
    print("a", i, flush=True)
    fault_point("stage:done")
print("finished", flush=True)
"""


def run(fault: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    if fault is not None:
        env[faults.ENV] = fault
    return subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize(("fault", "printed"), [("stage:done", 1), ("stage:done:1", 1), ("stage:done:3", 3)])
def test_the_named_point_kills_the_process_at_its_nth_hit(fault, printed):
    done = run(fault)
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split("\n")[:-1] == [f"a {i}" for i in range(1, printed + 1)]
    assert "fault point stage:done reached" in done.stderr


@pytest.mark.parametrize("fault", [None, "", "generate:tree", "stage:done:4", "stage"])
def test_other_points_unset_or_unreached_counts_do_nothing(fault):
    done = run(fault)
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("finished\n")


def test_the_target_is_parsed_from_the_environment(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    assert faults.target() is None and not faults.armed("train:step")
    monkeypatch.setenv(faults.ENV, "train:step")
    assert faults.target() == ("train:step", 1) and faults.armed("train:step") and not faults.armed("stage:done")
    monkeypatch.setenv(faults.ENV, "model:before_rename:7")
    assert faults.target() == ("model:before_rename", 7)
    monkeypatch.setenv(faults.ENV, "stage:done:0")  # no 0th hit: the whole text is the name
    assert faults.target() == ("stage:done:0", 1)
    faults.fault_point("stage:done")  # not the named point: returns


def test_every_named_point_is_placed_in_the_code():
    sources = "".join(p.read_text() for folder in ("evolution", "training", "evomath")
                      for p in (REPO / folder).rglob("*.py") if p.name != "faults.py")
    for point in faults.POINTS:
        assert f'fault_point("{point}")' in sources, point


class Crash(BaseException):
    pass


def test_a_crash_before_the_rename_leaves_the_old_model_aside_and_a_rerun_puts_a_whole_one_in_place(
        tmp_path, monkeypatch):
    from training import model_io

    out = tmp_path / "policy"

    def write(marker: str) -> None:
        with model_io.staged_model_dir(out, overwrite=True) as stage:
            (stage / "config.json").write_text(marker)

    write("first")

    def crash(name):
        if name == "model:before_rename":
            raise Crash

    monkeypatch.setattr(model_io, "fault_point", crash)
    with pytest.raises(Crash):
        write("second")
    assert not out.exists()  # killed here: the old model is aside, the new one complete in its stage
    assert (tmp_path / ".policy.partial" / "config.json").read_text() == "second"
    monkeypatch.setattr(model_io, "fault_point", lambda name: None)
    write("third")
    assert (out / "config.json").read_text() == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]  # no stage, no old copy left


def test_the_train_step_callback_reaches_its_point_at_every_step_end(monkeypatch):
    from training import trainer

    hits = []
    monkeypatch.setattr(faults, "fault_point", hits.append)
    callback = trainer._fault_callback()
    callback.on_step_end(None, None, None)
    callback.on_step_end(None, None, None)
    assert hits == ["train:step", "train:step"]

