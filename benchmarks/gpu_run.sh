#!/usr/bin/env bash
# The device check, as one command for a lent GPU machine (CUDA, torch and transformers, no network,
# no vLLM): installs the carried wheels (.whl/: TRL, datasets, pydantic and what they need beyond the
# image; .whl/alt/: an older datasets in case the image's pyarrow is too old for the newer one), then
# runs benchmarks/gpu_check.py on the 1.5B shape (all four trainers, each served back) and the 7B
# shape (full SFT on one GPU, the memory plan's tightest case). Results land in $OUT.
#     here: bash benchmarks/gpu_wheels.sh; there: bash benchmarks/gpu_run.sh (carry: .whl)
set -uo pipefail
export OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
install() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$2" "$1"/*.whl; }
install .whl /tmp/site || exit 3
export PYTHONPATH=/tmp/site
probe='import torch, transformers, trl, datasets, pyarrow, accelerate, pydantic; from datasets import Dataset; Dataset.from_list([{"a": [1]}])
print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__, "trl", trl.__version__,
      "datasets", datasets.__version__, "pyarrow", pyarrow.__version__, "accelerate", accelerate.__version__)'
if ! python3 -c "$probe" >"$OUT/versions.txt" 2>&1; then
  echo "datasets $(ls .whl/datasets-*) failed to import; trying .whl/alt" | tee -a "$OUT/versions.txt"
  install .whl/alt /tmp/site-alt && export PYTHONPATH=/tmp/site-alt:/tmp/site
  python3 -c "$probe" >>"$OUT/versions.txt" 2>&1 || { cat "$OUT/versions.txt"; exit 4; }
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$OUT/versions.txt"
cat "$OUT/versions.txt"
check() {  # name, seconds, gpu_check arguments...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  GPU_CHECK_NAME=$name timeout "$limit" python3 benchmarks/gpu_check.py "$@" >"$OUT/$name.log" 2>&1
  echo "== $name: exit $? after $((SECONDS - start)) s"
  grep -v -i -E "warn|examples/s|UNEXPECTED|^\s*$" "$OUT/$name.log" | tail -n 90
}
check gpu_check_1.5b "${LIMIT_15B:-220}" --shape 1.5b --batch-size 32 --steps 3
check gpu_check_7b "${LIMIT_7B:-180}" --shape 7b --config configs/gpu_rstar_7b.yaml --trainers sft --max-length 2048 --batch-size 8 --steps 2
