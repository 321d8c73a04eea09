"""Deploy prefect.yaml to a Prefect server: ``python -m deployments.deploy [--config FILE] [--api-url URL]``.

Creates the process pool prefect.yaml names (``evomath-local``) if missing (one flow run at a time: a CPU machine runs one
engine), runs ``prefect deploy --all`` from the repository root (the worker then runs the flows from
this checkout), and, given a config, makes it every deployment's default ``config`` parameter.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PREFECT_FILE = REPO / "prefect.yaml"
POOL = yaml.safe_load(PREFECT_FILE.read_text())["definitions"]["work_pool"]["name"]  # named once, there


def deployment_names(prefect_file: Path = PREFECT_FILE) -> dict[str, str]:
    """deployment name -> "flow-name/deployment-name" as the API knows it."""
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load(prefect_file.read_text())
    names = {}
    for item in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(REPO / item["entrypoint"]))
        names[item["name"]] = f"{flow.name}/{item['name']}"
    return names


def ensure_pool(client, concurrency: int = 1) -> None:
    """The process pool, running ``concurrency`` flow runs at a time (a worker may have created it)."""
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        client.read_work_pool(POOL)
        client.update_work_pool(POOL, WorkPoolUpdate(concurrency_limit=concurrency))
    except ObjectNotFound:
        client.create_work_pool(WorkPoolCreate(
            name=POOL, type="process", concurrency_limit=concurrency,
            base_job_template=ProcessWorker.get_default_base_job_template(),
        ))


def deploy(api_url: str, config_path: str | Path | None = None, prefect_file: Path = PREFECT_FILE) -> dict[str, str]:
    """Deploy every deployment of ``prefect_file``; returns deployment name -> id."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        ensure_pool(client)
        env = os.environ | {"PREFECT_API_URL": api_url}
        done = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all",
                               "--prefect-file", str(prefect_file)], cwd=REPO, env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"prefect deploy failed:\n{done.stdout}{done.stderr}")
        ids = {}
        for short, full in deployment_names(prefect_file).items():
            deployment = client.read_deployment_by_name(full)
            if config_path is not None:
                client.update_deployment(deployment.id, DeploymentUpdate(
                    parameters={**deployment.parameters, "config": config_parameter(config_path)}))
            ids[short] = str(deployment.id)
    return ids


def config_parameter(path: str | Path) -> dict:
    """The config as the flows' ``config`` parameter, its run dir made absolute (the worker's cwd differs)."""
    from evomath.config import load_config

    config = load_config(path)
    config = config.model_copy(update={"run_dir": Path(config.run_dir).resolve()})
    return config.model_dump(mode="json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", default=os.environ.get("PREFECT_API_URL", "http://127.0.0.1:4200/api"))
    parser.add_argument("--config", help="YAML config to make the deployments' default parameter")
    args = parser.parse_args(argv)
    for name, deployment_id in deploy(args.api_url, args.config).items():
        print(f"{name}: {deployment_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
