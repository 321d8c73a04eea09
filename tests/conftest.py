"""Shared fixtures: one vLLM engine on the embedded model per test session.

The engine takes tens of seconds to start on 2 CPU cores, so every integration test reuses it.
The model cache is the real one ($EVOMATH_HOME or ~/.cache/evomath: converted once per machine);
Prefect and MLflow write under a temporary directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_TMP_HOME = Path(tempfile.mkdtemp(prefix="evomath-test-home-"))
os.environ.setdefault("PREFECT_HOME", str(_TMP_HOME / "prefect"))
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{_TMP_HOME / 'mlflow.db'}")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The embedded SmolLM2-135M as a safetensors directory (converted once, cached)."""
    from evomath.models import DEFAULT_MODEL, pull

    return pull(DEFAULT_MODEL, verify=False)


@pytest.fixture(scope="session")
def policy_backend(embedded_model_dir):
    """The embedded model in an in-process vLLM engine, shared by the whole session."""
    from evomath.backends.vllm_backend import VLLMBackend
    from evomath.config import EngineConfig

    backend = VLLMBackend(str(embedded_model_dir), EngineConfig(cpu_kv_cache_gb=1.0))
    yield backend
    backend.close()
