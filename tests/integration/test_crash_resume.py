"""Nothing is lost: a round killed (SIGKILL) at each named fault point, in round order, then run once
more, leaves what an uninterrupted round leaves.

Round 1 of configs/tiny.yaml runs through ``evomath run`` as a subprocess, once without faults into
A, then into B five times with ``EVOMATH_FAULT`` naming one point of ``evomath.faults`` each (a tree
appended by generation, a tree saved by the extra rollouts, a stage's record written, a training
step, a model directory staged but not renamed), each run resuming what the one before left, and a
sixth time without faults. About 6-9 minutes on 2 CPU cores (seven engine starts).

What must hold whatever the engine does: every killed run died at its point, the last one finished,
no problem is lost or doubled, every file parses and no temporary is left, every stage is recorded
on its final inputs, and the extra rollouts extended exactly the trees generation left hard, once.
Equality with A is asserted separately (``test_the_resumed_*``): every request is seeded per (seed,
problem, rollout, depth), so the trees match unless vLLM's CPU kernels give different logits for a
different batch (a resumed run has fewer problems in flight); the share of identical trees is
printed either way (``pytest -s``). EVOMATH_CRASH_TEST_SET (see ``overrides``) takes batch
composition out of the comparison.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from evolution import stages
from evomath import faults
from evomath.config import apply_overrides, load_config
from evomath.files import read_jsonl
from evomath.tree import read_trees

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"
ROUND = 1
RUN_TIMEOUT_S = 900


def overrides(run_dir: Path) -> list[str]:
    """The tiny config for one round into ``run_dir``, plus EVOMATH_CRASH_TEST_SET's assignments (both
    runs), e.g. "search.concurrent_problems=1 engine.enable_prefix_caching=false": every batch then
    holds one problem's requests whether resumed or not, for an exact comparison (slower)."""
    return ["rounds=1", f"run_dir={run_dir}", *os.environ.get("EVOMATH_CRASH_TEST_SET", "").split()]


def context(run_dir: Path) -> stages.RoundContext:
    return stages.round_context(apply_overrides(load_config(TINY), overrides(run_dir)), ROUND)


def evomath_run(run_dir: Path, log: Path, fault: str | None = None) -> int:
    """``evomath run configs/tiny.yaml --round 1`` in a fresh process, its output in ``log``; its exit
    status (-9 when a fault point killed it)."""
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    if fault is not None:
        env[faults.ENV] = fault
    command = [sys.executable, "-m", "deployments.cli", "run", str(TINY), "--round", str(ROUND)]
    for assignment in overrides(run_dir):
        command += ["--set", assignment]
    with log.open("w") as out:  # a file, not a pipe: a killed run's orphans must not hold our read open
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"{' '.join(command)} ran past {RUN_TIMEOUT_S} s:\n{tail(log)}") from None
    if rc == -signal.SIGKILL:
        try:  # what the killed run left running in its session (grader, sandbox workers)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return rc


def tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:]


def record(ctx: stages.RoundContext, stage: str) -> dict:
    return json.loads(stages.stage_record(ctx.dir, stage).read_text())["metrics"]


@dataclass
class Runs:
    a: stages.RoundContext
    b: stages.RoundContext
    plan: list[tuple[str, int]]  # (fault point, hit) of B's killed runs, in order


@pytest.fixture(scope="module")
def runs(tmp_path_factory, embedded_model_dir) -> Runs:
    base = tmp_path_factory.mktemp("crash-resume")
    logs = base / "logs"  # outside the run directories, which are checked file by file
    logs.mkdir()
    rc = evomath_run(base / "A", logs / "A.log")
    assert rc == 0, tail(logs / "A.log")
    a = context(base / "A")
    # Which hits exist follows from what the uninterrupted round did.
    problems = len(list(read_trees(a.path(stages.TREES))))
    hard = record(a, "extra_rollouts")["hard_before"]
    renames = record(a, "train_policy").get("policy_trained", 0) + record(a, "train_reward").get("ppm_trained", 0)
    if problems < 2 or not hard or not renames:
        pytest.fail(f"the uninterrupted tiny round reaches too few points to kill: {problems} problems, "
                    f"{hard} hard (extra rollouts), {renames} models trained")
    rng = random.Random(0)
    plan = [
        ("generate:tree", rng.randint(1, problems - 1)),  # some trees appended, some not
        ("extra_rollouts:tree", rng.randint(1, max(1, hard - 1))),  # room for a resumed tree to differ
        ("stage:done", rng.randint(1, 4)),  # after extra_rollouts', bucket's, select_sft's or reward_data's record
        ("train:step", 1),  # the first optimizer step of the round's first training
        ("model:before_rename", rng.randint(1, renames)),  # the policy's or the PPM's directory, staged
    ]
    print(f"\ncrash-resume plan: {plan}")
    for i, (point, hit) in enumerate(plan, 1):
        log = logs / f"B{i}-{point.replace(':', '-')}.log"
        rc = evomath_run(base / "B", log, f"{point}:{hit}")
        assert rc == -signal.SIGKILL, f"run {i} ({point}:{hit}) exited {rc}, not killed:\n{tail(log)}"
        assert f"fault point {point} reached {hit} time(s)" in log.read_text(), tail(log)
    rc = evomath_run(base / "B", logs / "B-final.log")
    assert rc == 0, tail(logs / "B-final.log")
    return Runs(a, context(base / "B"), plan)


def test_the_round_was_killed_at_every_point_in_round_order(runs):
    assert [point for point, _ in runs.plan] == list(faults.POINTS)


def test_no_problem_is_lost_or_duplicated(runs):
    expected = sorted(p.id for p in stages.training_problems(runs.b.config))
    assert len(expected) == runs.b.config.data.limit
    for name in (stages.TREES, stages.TREES_FINAL):
        for ctx in (runs.a, runs.b):
            ids = [t.problem_id for t in read_trees(ctx.path(name))]
            assert sorted(ids) == expected, (ctx.dir, name)  # each exactly once
    for name in (stages.BUCKETS, stages.SFT_DATA):
        ids = [row["problem_id"] for row in read_jsonl(runs.b.path(name))]
        assert set(ids) <= set(expected)
    assert len(list(read_jsonl(runs.b.path(stages.BUCKETS)))) == len(expected)


def _leftovers(directory: Path) -> list[Path]:
    """Temporaries (atomic writes' ``.name.*.tmp``, ``.policy.partial``, ``.policy.old``), files set
    aside as stale, the extra rollouts' partial file."""
    return [p for p in directory.rglob("*") if p.name.startswith(".") or ".stale" in p.name
            or p.name.endswith((".tmp", ".partial")) or p.name == stages.TREES_EXTRA]


def _check_whole(path: Path) -> None:
    if path.suffix == ".jsonl":
        if path.name.startswith("trees"):
            list(read_trees(path))  # every line, its schema and shape
        else:
            list(read_jsonl(path))
    elif path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as fh:  # every tensor read: a file cut short fails here
            for name in fh.keys():
                fh.get_tensor(name)


def test_every_artifact_is_whole_and_no_temporary_is_left(runs):
    from evomath.models import check_model_dir

    for ctx in (runs.a, runs.b):
        assert _leftovers(stages.experiment_dir(ctx.config)) == []
        files = [p for p in stages.experiment_dir(ctx.config).rglob("*") if p.is_file()]
        assert len(files) > 10
        for path in files:
            _check_whole(path)
        for model in (stages.POLICY, stages.PPM):
            if ctx.path(model).exists():
                check_model_dir(ctx.path(model))  # config, weights, every shard


def test_every_stage_is_recorded_on_its_final_inputs(runs):
    for ctx in (runs.a, runs.b):
        for stage in stages.STAGES:
            assert stages.stage_record(ctx.dir, stage).is_file(), stage
            assert stages.finished_stage(ctx, stage) is not None, f"{ctx.dir}: {stage}'s record has another key"


def test_the_extra_rollouts_extended_every_tree_left_hard_once(runs):
    """Whatever the engine sampled: trees-final continues B's own trees.jsonl (the saved extensions
    were not made from an earlier run's trees), and each tree hard after generation got each attempt
    once (a tree's seeds list every search that grew it)."""
    from training.buckets import bucket_of

    seed = stages.round_search_config(runs.b).seed
    schedule = runs.b.config.hard_extra_rollouts.get(ROUND, [])
    assert len(schedule) == 1, "the check below follows a one-attempt schedule"
    generated = {t.problem_id: t for t in read_trees(runs.b.path(stages.TREES))}
    final = {t.problem_id: t for t in read_trees(runs.b.path(stages.TREES_FINAL))}
    for pid, tree in generated.items():
        assert tree.meta["seeds"] == [seed], pid
        grown = final[pid]
        shape = [(n.text, n.parent) for n in tree.nodes]
        assert [(n.text, n.parent) for n in grown.nodes[:len(shape)]] == shape, pid
        hard = bucket_of(tree) == "hard"
        assert grown.meta["seeds"] == [seed] + ([seed + 100] if hard else []), pid
        if not hard:
            assert grown.to_dict() == tree.to_dict(), pid
    assert record(runs.b, "extra_rollouts")["hard_before"] == sum(bucket_of(t) == "hard" for t in generated.values())


def _texts(path: Path) -> dict[str, list[str]]:
    return {t.problem_id: [n.text for n in t.nodes] for t in read_trees(path)}


def test_the_resumed_trees_and_data_equal_the_uninterrupted_ones(runs):
    """Exact where a resume must reproduce: the trees generation wrote before it was killed (kept, not
    searched again), the trees' problems and order, and the data (SFT rows, reward-model pairs,
    buckets) of every problem whose final tree is identical. Not asserted: the trees searched after a
    resume. Every request is seeded, but vLLM on the CPU computes in bf16 and a resumed search has
    other requests beside each one in the engine, so a node can sample another token (measured with
    the engine fed continuously: 5 of 6 generated trees identical, the sixth from one node on). The
    share is printed; EVOMATH_CRASH_TEST_SET takes batch composition out for an exact comparison."""
    shares = {}
    for name in (stages.TREES, stages.TREES_FINAL):
        a, b = _texts(runs.a.path(name)), _texts(runs.b.path(name))
        same = sum(a[pid] == b.get(pid) for pid in a)
        shares[name] = f"{same}/{len(a)}"
    print(f"\ncrash-resume: trees identical to the uninterrupted round's: {shares}")
    kept = dict(runs.plan)["generate:tree"]
    generated_a = _texts(runs.a.path(stages.TREES))
    before_kill = list(read_trees(runs.b.path(stages.TREES)))[:kept]
    assert {t.problem_id: [n.text for n in t.nodes] for t in before_kill} == \
        {t.problem_id: generated_a[t.problem_id] for t in before_kill}, shares
    trees_a, trees_b = list(read_trees(runs.a.path(stages.TREES_FINAL))), list(read_trees(runs.b.path(stages.TREES_FINAL)))
    # the order too: training shuffles by position, so the same rows in another order train another model
    assert [t.problem_id for t in trees_b] == [t.problem_id for t in trees_a]
    final_b = {t.problem_id: [n.text for n in t.nodes] for t in trees_b}
    same = [t for t in trees_a if [n.text for n in t.nodes] == final_b[t.problem_id]]
    assert same, shares
    ids, questions = {t.problem_id for t in same}, [t.question for t in same]

    def of_same(path: Path) -> list[str]:
        return sorted(json.dumps(row, sort_keys=True) for row in read_jsonl(path)
                      if row.get("problem_id") in ids or any(q in row.get("prompt", "") for q in questions))

    for name in (stages.BUCKETS, stages.SFT_DATA, stages.PAIRS):
        assert of_same(runs.b.path(name)) == of_same(runs.a.path(name)), name


# Metrics that measure the run, not what it made: time, throughput, this process's share of the work.
RUN_METRICS = ("seconds", "tokens", "tok_s", "per_s", "resumed", "startup")


def _what_was_made(ctx: stages.RoundContext, stage: str) -> dict:
    return {k: v for k, v in record(ctx, stage).items()
            if isinstance(v, (int, float)) and not any(part in k for part in RUN_METRICS)}


def test_the_resumed_metrics_and_models_equal_the_uninterrupted_ones(runs):
    """Every stage's counts, losses and accuracies, and the trained models' weights, as A's (training
    on CPU is deterministic for the same rows in the same order)."""
    from evomath.models import model_fingerprint

    a, b = (sorted(p.relative_to(ctx.dir) for p in ctx.dir.rglob("*")) for ctx in (runs.a, runs.b))
    assert b == a  # the same files, no more, no fewer
    for stage in stages.STAGES:
        made = _what_was_made(runs.a, stage)
        assert _what_was_made(runs.b, stage) == pytest.approx(made, rel=1e-6, abs=1e-9), stage
    for model in (stages.POLICY, stages.PPM):
        assert runs.a.path(model).is_dir() == runs.b.path(model).is_dir(), model
        if runs.a.path(model).is_dir():
            assert model_fingerprint(runs.b.path(model)) == model_fingerprint(runs.a.path(model)), model
