#!/usr/bin/env bash
# The GPU checks, as one prepared script for a lent GPU machine (its image has torch and
# Lightning, not hydra-core/mlflow/optuna, and no network). About 6 minutes at most.
#
# Here, first:    python scripts/fetch_gpu_wheels.py       (wheels into .whl/, git-ignored)
# Then, with the device tool:  run  command="bash scripts/gpu_check.sh"  carry=[".whl"]
#                              timeout_s=420
# Writes under $OUT: summary.txt (each step's exit code and time), env.txt, pytest_gpu.log,
# bench_cuda.log, train_gpu.log.
set -u
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1
cd "$(dirname "$0")/.."
PY=python3

step() {  # step NAME TIMEOUT_S LOG CMD...: run CMD with a time limit, log it, record its rc
    local name=$1 limit=$2 log=$3
    shift 3
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$log" 2>&1
    local rc=$?
    echo "$name: rc=$rc ($((SECONDS - t0)) s, limit $limit s) -> $log" | tee -a "$OUT/summary.txt"
}

# 1. What is missing, from the carried wheels, into a folder of its own (the image's packages
#    stay as they are).
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl >"$OUT/pip.log" 2>&1 || {
        echo "pip install of the carried wheels failed (see pip.log)" | tee -a "$OUT/summary.txt"
        exit 1
    }
    export PYTHONPATH=/tmp/site:$PWD/src
else
    echo "no wheels in .whl/: run python scripts/fetch_gpu_wheels.py here, carry .whl" \
        | tee -a "$OUT/summary.txt"
    exit 1
fi

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    $PY -c 'import torch, pytorch_lightning as pl, hydra, mlflow, optuna
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())
print("lightning", pl.__version__, "hydra", hydra.__version__, "mlflow", mlflow.__version__,
      "optuna", optuna.__version__)'
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# 2. The GPU tests (data on the GPU, a tiny bf16 fit there).
step "pytest -m gpu" 80 pytest_gpu.log $PY -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py

# 3. Throughput on cuda: the product's Lightning path vs a plain loop, fp32 and bf16-mixed.
step "bench cuda" 110 bench_cuda.log $PY bench/throughput.py --device cuda --steps 300 \
    --warmup 50 --reps 3

# 4. The reference recipe end to end (2000 steps, validation, test, MLflow run, model, report),
#    its store, outputs and checkpoints in /tmp.
step "train.py trainer=gpu" 150 train_gpu.log $PY src/train.py trainer=gpu \
    logger.tracking_uri=sqlite:////tmp/gpu_check/mlflow.db hydra.run.dir=/tmp/gpu_check/outputs \
    ckpt_dir=/tmp/gpu_check/checkpoints

tail -n 3 "$OUT/pytest_gpu.log" "$OUT/bench_cuda.log" "$OUT/train_gpu.log"
cat "$OUT/summary.txt"
! grep -q "rc=[1-9]" "$OUT/summary.txt"
