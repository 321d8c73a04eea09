"""The local services: a Prefect server, a Prefect worker and an MLflow server (``evomath up`` / ``down``).

Each one runs detached in its own session, with a pid file (pid, start time, ports) and a log under
``<run_dir>/servers/``. ``up`` is idempotent (a service already running is left alone) and waits
until each answers its health check; ``down`` stops exactly the process groups it started, checked
by pid and start time, so a reused pid is never signalled. The MLflow server uses the same SQLite
store and artifact folder as runs made without it (``tasks/tracking.py``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from deployments.deploy import POOL
from evomath.errors import InputError
from tasks import tracking

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[1]


class ServerError(InputError, RuntimeError):
    """A service cannot start; the message says why and where its log is."""


@dataclass
class Service:
    name: str
    argv: list[str]
    port: int | None  # None: a client (the worker), healthy once its pool shows it online
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Addresses:
    prefect: str  # the UI; the API is at <prefect>/api
    mlflow: str

    @property
    def prefect_api(self) -> str:
        return f"{self.prefect}/api"


def servers_dir(run_dir: str | Path) -> Path:
    return Path(run_dir).resolve() / "servers"


def _services(run_dir: Path, addresses: Addresses, prefect_port: int, mlflow_port: int) -> list[Service]:
    prefect_env = {"PREFECT_HOME": str(servers_dir(run_dir) / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    store = tracking.store_dir(run_dir)
    store.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    return [
        Service("prefect-server", [py, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(prefect_port)],
                prefect_port, prefect_env | {"PREFECT_UI_API_URL": addresses.prefect_api}),
        Service("mlflow-server", [py, "-m", "mlflow", "server", "--host", HOST, "--port", str(mlflow_port),
                                  "--workers", "1", "--backend-store-uri", tracking.default_tracking_uri(run_dir),
                                  "--artifacts-destination", str(store / "artifacts")], mlflow_port),
        Service("prefect-worker", [py, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process",
                                   "--name", f"evomath-{prefect_port}"], None,
                prefect_env | {"PREFECT_API_URL": addresses.prefect_api, "MLFLOW_TRACKING_URI": addresses.mlflow}),
    ]


# ---------------------------------------------------------------- process bookkeeping


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/pid/stat), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _record_path(run_dir: Path, name: str) -> Path:
    return servers_dir(run_dir) / f"{name}.json"


def _running(run_dir: Path, name: str) -> dict | None:
    """The pid record of a service this module started and that is still alive; stale records go."""
    path = _record_path(run_dir, name)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if _start_time(record["pid"]) == record["start_time"]:
        return record
    path.unlink()
    return None


def _launch(run_dir: Path, service: Service, addresses: Addresses) -> dict:
    log = servers_dir(run_dir) / f"{service.name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(service.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=os.environ | service.env, cwd=REPO, start_new_session=True)
    record = {"pid": proc.pid, "start_time": _start_time(proc.pid), "argv": service.argv, "port": service.port,
              "prefect": addresses.prefect, "mlflow": addresses.mlflow, "log": str(log)}
    _record_path(run_dir, service.name).write_text(json.dumps(record, indent=2))
    return record


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) == 0


def _http_ok(url: str, data: bytes | None = None) -> str | None:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read().decode() if response.status == 200 else None
    except OSError:
        return None


def _healthy(service: Service, addresses: Addresses) -> bool:
    if service.name == "prefect-server":
        return _http_ok(f"{addresses.prefect_api}/health") is not None
    if service.name == "mlflow-server":
        return _http_ok(f"{addresses.mlflow}/health") is not None
    workers = _http_ok(f"{addresses.prefect_api}/work_pools/{POOL}/workers/filter", data=b"{}")
    return bool(workers) and any(w.get("status") == "ONLINE" for w in json.loads(workers))


def _wait(run_dir: Path, service: Service, addresses: Addresses, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _healthy(service, addresses):
        if _running(run_dir, service.name) is None:
            raise ServerError(f"{service.name} exited; see {servers_dir(run_dir) / (service.name + '.log')}")
        if time.monotonic() > deadline:
            raise ServerError(f"{service.name} not healthy after {timeout:.0f} s; "
                              f"see {servers_dir(run_dir) / (service.name + '.log')}")
        time.sleep(1)


# ---------------------------------------------------------------- commands


def addresses(run_dir: str | Path, prefect_port: int = 4200, mlflow_port: int = 5000) -> Addresses:
    """The addresses of running services (from their records), else the ones these ports give."""
    run_dir = Path(run_dir)
    record = _running(run_dir, "prefect-server") or _running(run_dir, "mlflow-server")
    if record:
        return Addresses(record["prefect"], record["mlflow"])
    return Addresses(f"http://{HOST}:{prefect_port}", f"http://{HOST}:{mlflow_port}")


def up(run_dir: str | Path = "runs", prefect_port: int = 4200, mlflow_port: int = 5000, timeout: float = 240,
       say=print) -> Addresses:
    """Start whichever services are not running yet and wait until all are healthy."""
    run_dir = Path(run_dir)
    servers_dir(run_dir).mkdir(parents=True, exist_ok=True)
    where = addresses(run_dir, prefect_port, mlflow_port)
    ports = {"prefect-server": int(where.prefect.rsplit(":", 1)[1]), "mlflow-server": int(where.mlflow.rsplit(":", 1)[1])}
    for service in _services(run_dir, where, ports["prefect-server"], ports["mlflow-server"]):
        record = _running(run_dir, service.name)
        if record:
            say(f"{service.name}: already running (pid {record['pid']})")
        else:
            if service.port is not None and _port_taken(service.port):
                raise ServerError(f"port {service.port} is in use by a process evomath did not start; "
                                  f"choose another port (--prefect-port / --mlflow-port)")
            record = _launch(run_dir, service, where)
            say(f"{service.name}: started (pid {record['pid']}, log {record['log']})")
        _wait(run_dir, service, where, timeout)
    return where


def down(run_dir: str | Path = "runs", timeout: float = 30, say=print) -> list[str]:
    """Stop the process groups ``up`` started (worker first), and only those."""
    run_dir = Path(run_dir)
    stopped = []
    for name in ("prefect-worker", "mlflow-server", "prefect-server"):
        record = _running(run_dir, name)
        if record is None:
            say(f"{name}: not running")
            continue
        _stop_group(record["pid"], timeout)
        _record_path(run_dir, name).unlink(missing_ok=True)
        stopped.append(name)
        say(f"{name}: stopped (pid {record['pid']})")
    return stopped


def _stop_group(pid: int, timeout: float) -> None:
    """SIGTERM to the process group ``up`` started (its leader is ``pid``), SIGKILL to what lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _reap(pid)
            if not _group_alive(pid):
                return
            time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    """Does a live (not zombie) process remain in the group?"""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _reap(pid: int) -> None:
    """Collect the leader's exit status when this process is its parent (``up`` and ``down`` in one process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def status(run_dir: str | Path = "runs") -> dict[str, dict | None]:
    run_dir = Path(run_dir)
    return {name: _running(run_dir, name) for name in ("prefect-server", "prefect-worker", "mlflow-server")}


# ---------------------------------------------------------------- command line


def add_server_commands(sub) -> None:
    """``evomath up`` / ``down`` / ``status`` / ``demo``."""

    def ports(parser) -> None:
        parser.add_argument("--prefect-port", type=int, default=4200)
        parser.add_argument("--mlflow-port", type=int, default=5000)

    def run_dir(parser) -> None:
        parser.add_argument("--run-dir", default="runs", help="servers' logs and pid files go to RUN_DIR/servers")

    start = sub.add_parser("up", help="start the Prefect server and worker and the MLflow server (idempotent)")
    run_dir(start)
    ports(start)
    start.set_defaults(func=_cmd_up)
    stop = sub.add_parser("down", help="stop the services `evomath up` started")
    run_dir(stop)
    stop.set_defaults(func=_cmd_down)
    show = sub.add_parser("status", help="which services are running, and where")
    run_dir(show)
    show.set_defaults(func=_cmd_status)
    demo = sub.add_parser(
        "demo", help="start the services, deploy, and run the demo self-evolution through its deployment",
        description="evomath up, deploy prefect.yaml with CONFIG as the deployments' default, run the "
        "self-evolution deployment, wait for it and print the table; the rounds show in both UIs.",
    )
    demo.add_argument("--config", default=str(REPO / "configs" / "cpu_demo.yaml"))
    demo.add_argument("--rounds", type=int, help="default: the config's rounds")
    ports(demo)
    demo.set_defaults(func=_cmd_demo)


def _say_addresses(where: Addresses) -> None:
    print(f"Prefect UI: {where.prefect}\nMLflow UI:  {where.mlflow}\n"
          f"(clients: export PREFECT_API_URL={where.prefect_api} MLFLOW_TRACKING_URI={where.mlflow})")


def _cmd_up(args) -> int:
    try:
        _say_addresses(up(args.run_dir, args.prefect_port, args.mlflow_port))
    except ServerError as err:
        print(f"evomath up: {err}", file=sys.stderr)
        return 1
    return 0


def _cmd_down(args) -> int:
    down(args.run_dir)
    return 0


def _cmd_status(args) -> int:
    for name, record in status(args.run_dir).items():
        where = f"pid {record['pid']}, port {record['port']}, log {record['log']}" if record else "not running"
        print(f"{name:15s} {where}")
    return 0


def _cmd_demo(args) -> int:
    from evomath.config import load_config

    config = load_config(args.config)
    try:
        where = up(config.run_dir, args.prefect_port, args.mlflow_port)
    except ServerError as err:
        print(f"evomath demo: {err}", file=sys.stderr)
        return 1
    _say_addresses(where)
    command = [sys.executable, "-m", "deployments.demo", "--api-url", where.prefect_api, "--mlflow-url", where.mlflow,
               "--config", str(Path(args.config).resolve())]
    if args.rounds:
        command += ["--rounds", str(args.rounds)]
    # deployments/ lives at the repository root beside prefect.yaml, not in the installed package
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(command, env=os.environ | {"PYTHONPATH": path}).returncode
