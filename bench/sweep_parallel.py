"""Wall time of the `layers` sweep run sequentially vs as N parallel joblib jobs.

python bench/sweep_parallel.py                   # 2 repetitions each, alternating, n_jobs=2
python bench/sweep_parallel.py --reps 3 --steps 300

Each variant is the real command (`python src/train.py -m sweeps=layers ...`) in a fresh
process with a throw-away MLflow store, shortened (fewer steps, smaller model, no artifacts).
Sequential jobs use all cores each; parallel jobs cores / n_jobs each (train.py's thread_count).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_sweep(n_jobs: int, steps: int, units: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "src" / "train.py"), "-m", "sweeps=layers"]
        cmd += [f"max_steps={steps}", f"val_every={steps}", f"log_every={steps}"]
        cmd += [f"num_units={units}", "artifacts.model=false", "artifacts.pictures=false"]
        cmd += [f"logger.tracking_uri=sqlite:///{tmp}/mlflow.db", f"ckpt_dir={tmp}/ckpt"]
        cmd += [f"hydra.sweep.dir={tmp}/multirun"]
        if n_jobs > 1:
            cmd += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"]
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"sweep failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--units", type=int, default=128)
    args = parser.parse_args()
    print(
        f"layers sweep (num_layers=1,2,3), {args.steps} steps, {args.units} units, batch 100,"
        f" {len(os.sched_getaffinity(0))} cores"
    )
    times: dict[int, list[float]] = {1: [], args.n_jobs: []}
    for rep in range(args.reps):
        for n_jobs in times:  # alternate, so a slow spell on a shared machine hits both
            times[n_jobs].append(run_sweep(n_jobs, args.steps, args.units))
            print(f"  rep {rep + 1}: n_jobs={n_jobs}: {times[n_jobs][-1]:.1f} s", flush=True)
    seq, par = (statistics.median(times[n]) for n in times)
    print(f"sequential {seq:.1f} s, {args.n_jobs} parallel jobs {par:.1f} s (medians)")
    print(f"speed-up {seq / par:.2f}x")


if __name__ == "__main__":
    main()
