#!/usr/bin/env bash
# The GPU checks, as one prepared script for a lent GPU machine (its image has torch and
# Lightning, not hydra-core/mlflow/optuna, and no network). At most 9 minutes (step limits sum
# to 525 s); typically much less.
#
# Here, first:    python scripts/fetch_gpu_wheels.py       (wheels into .whl/, git-ignored)
# Then, with the device tool:  run  command="bash scripts/gpu_check.sh"  carry=[".whl"]
#                              timeout_s=540
# Writes under $OUT: summary.txt (each step's exit code and time), env.txt, and one log per step.
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
step "pytest -m gpu" 60 pytest_gpu.log $PY -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py

# 3. Throughput on cuda at batch 100, 256 and 1024: the product's Lightning path against a
#    plain loop, fp32 and bf16-mixed (medians of alternating repetitions).
for batch in 100 256 1024; do
    step "bench cuda batch $batch" 45 "bench_cuda_$batch.log" $PY bench/throughput.py \
        --device cuda --batch-size "$batch" --steps 200 --warmup 30 --reps 3 --no-peak
done

# 4. The reference recipe and the fast recipe end to end (fit, validation, test, MLflow run,
#    model, report, system metrics), stores and outputs in /tmp.
W=/tmp/gpu_check
common() { echo "logger.tracking_uri=sqlite:///$W/$1.db hydra.run.dir=$W/$1 ckpt_dir=$W/ckpt"; }
step "reference trainer=gpu" 75 train_reference.log $PY src/train.py trainer=gpu $(common reference)
step "fast trainer=gpu" 45 train_fast.log $PY src/train.py trainer=gpu +experiment=fast \
    $(common fast)

# 5. Trials sharing the GPU: 1, 2 and 4 jobs of 600 steps at once (joblib, jobs_per_gpu=4);
#    aggregate samples/s of each against one trial.
for n in 1 2 4; do
    seeds=$(seq -s, 1 "$n")
    step "sweep $n per GPU" 50 "share_$n.log" $PY src/train.py -m trainer=gpu "seed=$seeds" \
        max_steps=600 val_every=600 artifacts.model=false artifacts.pictures=false \
        hydra/launcher=joblib hydra.launcher.n_jobs="$n" jobs_per_gpu=4 \
        logger.tracking_uri="sqlite:///$W/share$n.db" hydra.sweep.dir="$W/share$n" \
        ckpt_dir="$W/ckpt"
    $PY bench/gpu_sharing.py --tracking-uri "sqlite:///$W/share$n.db" | tee -a "$OUT/sharing.txt"
done

# 6. DDP on every visible GPU (trainer=ddp: one process per GPU over NCCL, one MLflow run); on a
#    machine with one GPU this is a single process, which the run's world_size param says.
step "ddp trainer=ddp" 60 train_ddp.log $PY src/train.py trainer=ddp max_steps=600 val_every=300 \
    artifacts.model=false artifacts.pictures=false $(common ddp)
$PY -c "import mlflow; r = mlflow.MlflowClient('sqlite:///$W/ddp.db').search_runs(['1'])[0]
print('ddp run', r.info.status, 'world_size', r.data.params.get('world_size'),
      'val_acc', r.data.metrics.get('val_acc'))" | tee -a "$OUT/summary.txt"

for log in "$OUT"/*.log; do echo "== $log"; tail -n 4 "$log"; done
cat "$OUT/summary.txt"
! grep -q "rc=[1-9]" "$OUT/summary.txt"
