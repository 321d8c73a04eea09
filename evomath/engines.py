"""One policy engine per process, reused by every stage that generates with the same model.

Starting vLLM costs tens of seconds on a CPU and most of a GPU's memory, so stages ask this cache
instead of building engines; training stages call ``release()`` first to give the cores/GPU back.
"""

from __future__ import annotations

from evomath.backends import PolicyBackend, make_backend
from evomath.config import EngineConfig

_current: tuple[str, str, PolicyBackend] | None = None


def get_backend(model: str, config: EngineConfig) -> PolicyBackend:
    """The engine for ``model``; a different model (or config) replaces the running one."""
    global _current
    key = config.model_dump_json()
    if _current and _current[0] == model and _current[1] == key:
        return _current[2]
    release()
    backend = make_backend(model, config, in_process=True)  # safe: this cache holds one engine at a time
    _current = (model, key, backend)
    return backend


def release() -> None:
    """Shut the running engine down, if any."""
    global _current
    if _current is not None:
        _current[2].close()
        _current = None
