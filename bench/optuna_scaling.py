"""Slot utilisation of an Optuna sweep: asynchronous workers against the batches they replace.

python bench/optuna_scaling.py                    # on joblib processes, 2 slots, 2 reps each
python bench/optuna_scaling.py --slurm            # on a local single-node SLURM (needs root)

A sweep whose trials differ in length (1 or 2 layers of 16 to 128 units, a median pruner that
stops laggards) runs as the real command twice per repetition, alternating: with
`hydra.sweeper.asynchronous=false` (batches: a batch's next trials wait for its slowest) and
`=true` (each worker asks for its next trial as soon as its last one ends). Utilisation is the
trials' busy time (each one's MLflow run, start to end) over slots x wall time of the whole command;
medians over the repetitions. Then a simulation replays the measured trial durations on 8, 32
and 128 slots, batches against asynchronous workers (4 trials per slot, resampled with a fixed
seed), where start-up costs no longer hide the scheduling.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tests/slurm.py: the local cluster

from lstm_mnist.tracking.names import OPTUNA_TRIAL, PRUNED  # noqa: E402  (no MLflow import)

SEARCH = [
    "sweeps=optuna",
    "hydra.sweeper.params.num_units.choices=[16,64,128]",
    "hydra.sweeper.params.num_layers.high=2",
    "hydra.sweeper.pruner.n_startup_trials=2",
    "max_steps=400",
    "val_every=50",
    "log_every=50",
    "batch_size=64",
    "artifacts.model=false",
    "artifacts.pictures=false",
    "system_metrics_s=null",
]


def run_sweep(asynchronous: bool, slots: int, trials: int, slurm: bool) -> tuple[float, list]:
    """Wall time of the command, and how long each trial trained (its MLflow run's start to end:
    the study's own times would count a batch's trials as busy until its slowest has ended),
    with whether it was pruned."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "src" / "train.py"), "-m", *SEARCH]
        cmd += [f"hydra.sweeper.n_trials={trials}", f"hydra.sweeper.asynchronous={asynchronous}"]
        cmd += [f"logger.tracking_uri=sqlite:///{tmp}/mlflow.db", f"ckpt_dir={tmp}/ckpt"]
        cmd += [f"hydra.sweep.dir={tmp}/multirun"]
        if slurm:
            cmd += ["hydra/launcher=slurm", f"hydra.launcher.array_parallelism={slots}"]
            cmd += ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]
        else:
            cmd += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={slots}"]
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"sweep failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
        client = mlflow.MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(experiments, f"tags.{OPTUNA_TRIAL} != ''", max_results=1000)
        return wall, [
            ((r.info.end_time - r.info.start_time) / 1000, PRUNED in r.data.tags) for r in runs
        ]


def busy_s(trials: list) -> float:
    return sum(seconds for seconds, _ in trials)


def simulate(durations: list[float], slots: int, asynchronous: bool) -> float:
    """Utilisation of `slots` running trials of these durations, in order."""
    if asynchronous:  # each trial starts on the slot that frees first
        free = [0.0] * slots
        for d in durations:
            free[free.index(min(free))] += d
        makespan = max(free)
    else:  # batches of `slots` trials; the next batch waits for the slowest
        makespan = sum(max(durations[i : i + slots]) for i in range(0, len(durations), slots))
    return sum(durations) / (slots * makespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--slurm", action="store_true", help="on a local SLURM (tests/slurm.py)")
    args = parser.parse_args()
    if args.slurm:
        from slurm import slurm_cluster

        work = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
        with slurm_cluster(work) as env:
            os.environ.update(env)
            measure(args)
    else:
        measure(args)


def measure(args: argparse.Namespace) -> None:
    where = "SLURM array tasks" if args.slurm else "joblib processes"
    print(f"{args.trials} trials on {args.slots} slots ({where}), {os.cpu_count()} cores")
    utilisation: dict[bool, list[float]] = {False: [], True: []}
    durations: list[float] = []
    for rep in range(args.reps):
        for asynchronous in (False, True):  # alternate: a slow spell hits both
            wall, trials = run_sweep(asynchronous, args.slots, args.trials, args.slurm)
            used = busy_s(trials) / (args.slots * wall)
            utilisation[asynchronous].append(used)
            pruned = sum(was_pruned for _, was_pruned in trials)
            mode = "asynchronous" if asynchronous else "batches"
            print(
                f"  rep {rep + 1} {mode:12s}: wall {wall:6.1f} s, busy {busy_s(trials):6.1f} s,"
                f" {pruned} pruned, utilisation {used:.2f}",
                flush=True,
            )
            if asynchronous:
                durations += [seconds for seconds, _ in trials]
    batch, workers = (statistics.median(utilisation[a]) for a in (False, True))
    print(f"measured: batches {batch:.2f}, asynchronous {workers:.2f} (medians)")
    rng = random.Random(0)
    print(f"simulated from the {len(durations)} measured trial durations (4 trials per slot):")
    for slots in (8, 32, 128):
        sample = [rng.choice(durations) for _ in range(4 * slots)]
        b, a = simulate(sample, slots, False), simulate(sample, slots, True)
        print(f"  {slots:3d} slots: batches {b:.2f}, asynchronous {a:.2f}")


if __name__ == "__main__":
    main()
