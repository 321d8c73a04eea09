"""``python -m evomath.backends.verify MODEL_DIR``: load a model in vLLM and check that a greedy
completion is non-empty (``evomath.models.verify_model`` runs it in a child process)."""

from __future__ import annotations

import sys

from evomath.backends import GenerationRequest, make_backend


def main(path: str) -> None:
    backend = make_backend(path)
    try:
        result = backend.generate([GenerationRequest(prompt="2 + 3 =", temperature=0.0, max_tokens=8)])[0]
    finally:
        backend.close()
    text = result.completions[0].text
    if not text.strip():
        sys.exit("greedy completion is empty")
    print(f"ok: greedy completion of '2 + 3 =' -> {text!r}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m evomath.backends.verify MODEL_DIR")
    main(sys.argv[1])
