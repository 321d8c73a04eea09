"""prefect.yaml deploys to a temporary Prefect server: three deployments on the process pool, the
nightly cron schedule, and the config's fields in the parameter schema (the UI's form)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from deployments.deploy import deploy

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        with prefect_test_harness(server_startup_timeout=120):
            ids = deploy(PREFECT_API_URL.value(), REPO / "configs" / "tiny.yaml")
            with get_client(sync_client=True) as client:
                yield {name: client.read_deployment(i) for name, i in ids.items()}, client.read_work_pool("evomath-local")


def test_deployments_on_the_process_pool(deployed):
    deployments, pool = deployed
    assert set(deployments) == {"evolution-round", "self-evolution", "nightly-eval"}
    assert pool.type == "process" and pool.concurrency_limit == 1
    assert {d.work_pool_name for d in deployments.values()} == {"evomath-local"}
    assert {d.entrypoint for d in deployments.values()} == {
        "flows/evolution_round.py:evolution_round", "flows/self_evolution.py:self_evolution", "flows/evaluate.py:evaluate"}


def test_nightly_eval_schedule_and_champion(deployed):
    deployments, _ = deployed
    nightly = deployments["nightly-eval"]
    assert [(s.schedule.cron, s.active) for s in nightly.schedules] == [("0 2 * * *", True)]
    assert nightly.parameters["policy"] == "models:/policy@champion"
    assert nightly.parameters["ppm"] == "models:/ppm@champion"
    assert not deployments["evolution-round"].schedules and not deployments["self-evolution"].schedules


def test_parameter_schema_is_the_config_form(deployed):
    deployments, _ = deployed
    schema = deployments["evolution-round"].parameter_openapi_schema
    assert {"config", "round", "policy", "ppm", "scale"} <= set(schema["properties"])
    definitions = schema["definitions"]
    assert {"rollouts", "n_candidates", "c_puct", "step_format"} <= set(definitions["SearchConfig"]["properties"])
    assert {"search", "sft", "ppm", "eval", "rounds"} <= set(definitions["ExperimentConfig"]["properties"])
    assert definitions["SearchConfig"]["properties"]["step_format"]["enum"] == ["code", "natural"]
    assert "rounds" in deployments["self-evolution"].parameter_openapi_schema["properties"]
    # deployed with --config: the tiny config is every deployment's default
    for deployment in deployments.values():
        assert deployment.parameters["config"]["name"] == "tiny"
        assert Path(deployment.parameters["config"]["run_dir"]).is_absolute()

