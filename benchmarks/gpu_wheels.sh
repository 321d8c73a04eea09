#!/usr/bin/env bash
# Fetch, on this machine, the wheels benchmarks/gpu_run.sh installs on a lent GPU machine (which has
# torch, transformers, accelerate and peft but no network): the versions this project's CPU venv
# runs, for CPython 3.12 on x86-64, into .whl/ (ignored by git; carry it). .whl/alt/ holds an older
# datasets that asks less of pyarrow, tried when the newer one does not import there.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
fetch() {
  local into=$1; shift
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$into" "$@"
}
fetch .whl trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 pydantic==2.14.4 pydantic-core==2.50.5 \
  annotated-types typing-inspection typing-extensions
fetch .whl/alt datasets==4.7.0 dill==0.4.0 multiprocess==0.70.18
du -sh .whl
