"""The services ``evomath up`` starts, seen through their UIs in headless Chromium.

``up`` starts a Prefect server, a worker and an MLflow server on free ports (and is idempotent),
prefect.yaml is deployed, two round runs are logged to the MLflow server; Chromium then renders the
MLflow comparison of the two rounds and the Prefect deployment page, saving screenshots to
``$EVOMATH_SCREENSHOT_DIR`` (default ``runs/screenshots``). ``down`` stops exactly what ``up`` started.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from deployments import servers

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,1600",
                  "--virtual-time-budget=20000"]


def _chromium() -> str:
    """Debian's chromium, installed with apt-get when missing and possible; else the test is skipped."""
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"},
                       capture_output=True, timeout=600)
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("headless Chromium is not installed and `apt-get install -y chromium` was not possible here")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ui") / "runs"
    messages: list[str] = []
    try:
        where = servers.up(run_dir, _free_port(), _free_port(), say=messages.append)
        yield run_dir, where, messages
    finally:
        servers.down(run_dir, say=messages.append)


def _render(chromium: str, url: str, screenshot: Path, profile: Path) -> str:
    """Screenshot of ``url`` and its rendered DOM, each from a fresh profile."""
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    for flag, out in ((f"--screenshot={screenshot}", subprocess.DEVNULL), ("--dump-dom", subprocess.PIPE)):
        fresh = profile.with_name(f"{profile.name}-{flag[2:8]}")
        proc = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={fresh}", flag, url],
                              stdout=out, stderr=subprocess.DEVNULL, timeout=120, text=True)
    assert screenshot.stat().st_size > 20_000, f"{screenshot} looks blank"
    return proc.stdout


def test_up_is_idempotent(services):
    run_dir, where, messages = services
    assert [m.split(":")[0] for m in messages] == ["prefect-server", "mlflow-server", "prefect-worker"]
    again: list[str] = []
    assert servers.up(run_dir, say=again.append) == where
    assert all("already running" in m for m in again) and len(again) == 3
    assert all(servers.status(run_dir).values())


def test_ui_screenshots(services, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.deploy import deploy
    from evomath.config import ExperimentConfig
    from tasks.tracking import Tracker

    chromium = _chromium()
    run_dir, where, _ = services
    out = Path(os.environ.get("EVOMATH_SCREENSHOT_DIR", REPO / "runs" / "screenshots"))

    tracker = Tracker("ui-test", run_dir, uri=where.mlflow)
    parent = tracker.start_run("evolution", key="evolution")
    rounds = []
    for k, (easy, score) in enumerate([(3, 0.20), (5, 0.35)], 1):
        with tracker.run(f"round-{k}", key=f"round-{k}", parent=parent, tags={"round": str(k)}) as run_id:
            tracker.log_config(run_id, ExperimentConfig(name="ui-test"), round=k)
            tracker.log_metrics(run_id, {"easy": easy, "medium": 4, "hard": 7 - easy, "score": score})
            rounds.append(run_id)
    dom = _render(chromium, tracker.compare_url(rounds), out / "mlflow-compare-rounds.png", tmp_path / "mlflow")
    assert "round-1" in dom and "round-2" in dom
    # the link `make demo` prints: the runs as charts, not MLflow 3's GenAI overview of traces
    assert tracker.client.get_experiment(tracker.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    dom = _render(chromium, tracker.experiment_url(), out / "mlflow-experiment-charts.png", tmp_path / "mlflow-charts")
    assert "No data available" not in dom  # (the charts are canvases: run names are not in the DOM)

    ids = deploy(where.prefect_api, REPO / "configs" / "tiny.yaml")
    with temporary_settings({PREFECT_API_URL: where.prefect_api}), get_client(sync_client=True) as client:
        assert client.read_deployment(ids["nightly-eval"]).schedules
    url = f"{where.prefect}/deployments/deployment/{ids['nightly-eval']}"
    dom = _render(chromium, url, out / "prefect-deployment.png", tmp_path / "prefect")
    assert "nightly-eval" in dom and "evomath-local" in dom


def test_the_nightly_schedule_creates_its_runs(services):
    """The server's scheduler turns the nightly cron into scheduled runs at 02:00 UTC. Under
    SQLAlchemy 2.1 Prefect 3.7's bulk insert of them fails ("Can't evaluate bulk DML statement" in
    the server log) and no run is ever scheduled (requirements/constraints-*.txt pin it below 2.1)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.deploy import deploy

    run_dir, where, _ = services
    nightly = deploy(where.prefect_api, REPO / "configs" / "tiny.yaml")["nightly-eval"]
    with temporary_settings({PREFECT_API_URL: where.prefect_api}), get_client(sync_client=True) as client:
        deadline, runs = time.monotonic() + 90, []
        while not runs and time.monotonic() < deadline:
            time.sleep(2)
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[nightly])))
    log = Path(servers.status(run_dir)["prefect-server"]["log"]).read_text(errors="replace")
    assert "Can't evaluate bulk DML statement" not in log
    assert runs, "the scheduler created no run of the nightly schedule within 90 s"
    assert all(r.state.is_scheduled() and (r.expected_start_time.hour, r.expected_start_time.minute) == (2, 0)
               for r in runs)


def test_down_stops_exactly_what_up_started(services):
    """Runs last: a process outside evomath's records survives ``down``; the recorded groups do not."""
    run_dir, where, _ = services
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        pids = [r["pid"] for r in servers.status(run_dir).values()]
        assert servers.down(run_dir, say=lambda _: None) == ["prefect-worker", "mlflow-server", "prefect-server"]
        assert not any(servers._group_alive(pid) for pid in pids)
        assert bystander.poll() is None
        assert servers.down(run_dir, say=lambda _: None) == []
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", int(where.mlflow.rsplit(":", 1)[1])), timeout=2)
    finally:
        bystander.kill()
        bystander.wait()
