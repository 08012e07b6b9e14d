"""One process with every core against DDP with one process per core, on this machine's CPU.

Runs the whole command, `python src/train.py`, on the reference model (3 x 256, dropout 0.5) for
`--steps` steps with the same global batch both ways: (a) `trainer=cpu`, one process, torch
threads = the cores; (b) `trainer=ddp_cpu`, 2 processes over gloo, 1 thread each, batch_size
halved (Lightning's batch_size is per device). A and B alternate over `--reps` repetitions (the
machine may be shared) and medians are reported: training samples/s (from the timestamps of the
run's train_loss points in MLflow, so start-up is left out) and the whole command's wall time.

    python bench/ddp.py                     # 3 repetitions of 120 steps
    python bench/ddp.py --steps 60 --reps 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ["num_layers=3", "num_units=256", "dropout=0.5"]
QUIET = ["artifacts.model=false", "artifacts.pictures=false", "system_metrics_s=null"]


def cases(batch: int) -> dict[str, list[str]]:
    return {
        "1 process x all cores": ["trainer=cpu", f"batch_size={batch}"],
        "DDP 2 processes x 1 thread": ["trainer=ddp_cpu", f"batch_size={batch // 2}"],
    }


def run_once(overrides: list[str], steps: int, batch: int, tmp: Path) -> dict[str, float]:
    """The whole command once; its wall time and training samples/s."""
    import mlflow

    store = f"sqlite:///{tmp}/mlflow.db"
    command = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        *REFERENCE,
        *QUIET,
        *overrides,
        f"max_steps={steps}",
        f"val_every={steps}",
        "log_every=10",
        f"logger.tracking_uri={store}",
        f"hydra.run.dir={tmp}/outputs",
        f"ckpt_dir={tmp}/checkpoints",
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(overrides)} failed: {proc.stderr.strip().splitlines()[-1]}")
    client = mlflow.MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("lstm-mnist").experiment_id])
    points = sorted(client.get_metric_history(run.info.run_id, "train_loss"), key=lambda m: m.step)
    first, last = points[0], points[-1]
    seconds = (last.timestamp - first.timestamp) / 1000
    return {"wall_s": wall, "samples_per_s": (last.step - first.step) * batch / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=120, help="training steps per run")
    parser.add_argument("--reps", type=int, default=3, help="alternated repetitions of each")
    parser.add_argument("--batch", type=int, default=100, help="global batch (both cases)")
    args = parser.parse_args()

    results: dict[str, list[dict[str, float]]] = {name: [] for name in cases(args.batch)}
    for rep in range(args.reps):
        for name, overrides in cases(args.batch).items():
            with tempfile.TemporaryDirectory() as tmp:
                result = run_once(overrides, args.steps, args.batch, Path(tmp))
            results[name].append(result)
            print(json.dumps({"case": name, "rep": rep, **result}), flush=True)
    base = None
    print(f"\ncores: {len(os.sched_getaffinity(0))}, steps: {args.steps}, reps: {args.reps}")
    print(f"{'case':30} {'samples/s':>10} {'ratio':>6} {'wall s':>7}")
    for name, runs in results.items():
        rate = statistics.median(r["samples_per_s"] for r in runs)
        wall = statistics.median(r["wall_s"] for r in runs)
        base = base or rate
        print(f"{name:30} {rate:10.1f} {rate / base:6.3f} {wall:7.1f}")


if __name__ == "__main__":
    main()
