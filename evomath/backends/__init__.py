"""Generation backends: in-process vLLM and OpenAI-compatible servers."""

from evomath.backends.base import Completion, GenerationRequest, GenerationResult, PolicyBackend

__all__ = ["Completion", "GenerationRequest", "GenerationResult", "PolicyBackend", "make_backend"]


def make_backend(model: str, engine_config=None, in_process: bool | None = None) -> PolicyBackend:
    """Build the backend the config names; vLLM is imported only when it is used. ``in_process``:
    see ``vllm_backend.prepare_environment``."""
    from evomath.config import EngineConfig

    engine_config = engine_config or EngineConfig()
    if engine_config.backend == "openai":
        from evomath.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(model, engine_config)
    from evomath.backends.vllm_backend import VLLMBackend

    return VLLMBackend(model, engine_config, in_process=in_process)
