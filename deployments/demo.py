"""The demo through the deployments: deploy prefect.yaml, run ``self-evolution`` on a config, wait,
print both UIs' addresses and the evolution table. ``evomath demo`` starts the servers, then this.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from deployments.deploy import config_parameter, deploy


def transpose_table(rows: list[dict]) -> str:
    """One line per metric, one column per round: readable however many metrics a round has."""
    keys = list(dict.fromkeys(k for r in rows for k in r if k != "round"))
    header = ["round"] + [str(r["round"]) for r in rows]
    lines = [header] + [[k] + [_fmt(r.get(k, "")) for r in rows] for k in keys]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in lines)


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def run_demo(api_url: str, mlflow_url: str, config_path: str, rounds: int | None, say=print) -> int:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from evomath.config import ExperimentConfig
    from tasks.tracking import Tracker

    config = ExperimentConfig.model_validate(config_parameter(config_path))
    deploy(api_url, config_path)
    experiment_url = Tracker(config.name, config.run_dir, uri=mlflow_url).experiment_url()
    ui = api_url.removesuffix("/api")
    with temporary_settings({PREFECT_API_URL: api_url}):
        flow_run = run_deployment("self-evolution/self-evolution", parameters={"rounds": rounds}, timeout=0)
        say(f"Prefect UI: {ui}/runs/flow-run/{flow_run.id}")
        say(f"MLflow UI:  {experiment_url}")
        state = _wait(get_client(sync_client=True), flow_run.id, say)
    table = Path(config.run_dir) / config.name / "evolution.json"
    if state.is_completed() and table.exists():
        say(transpose_table(json.loads(table.read_text())))
    elif not state.is_completed():
        say(f"self-evolution {state.name}: {state.message}")
    say(f"Prefect UI: {ui}/runs/flow-run/{flow_run.id}\nMLflow UI:  {experiment_url}")
    return 0 if state.is_completed() else 1


def _wait(client, flow_run_id, say):
    """Poll until the run is final, saying each new state; returns the final state."""
    last = None
    with client:
        while True:
            state = client.read_flow_run(flow_run_id).state
            if state.name != last:
                say(f"self-evolution: {state.name}")
                last = state.name
            if state.is_final():
                return state
            time.sleep(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--mlflow-url", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--rounds", type=int, help="default: the config's rounds")
    args = parser.parse_args(argv)
    return run_demo(args.api_url, args.mlflow_url, args.config, args.rounds)


if __name__ == "__main__":
    sys.exit(main())
