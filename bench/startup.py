"""Start-up time of the commands that should answer at once: --help and a refused typo.

python bench/startup.py                         # this checkout, 5 alternated repetitions
python bench/startup.py --before /tmp/old-main  # and another checkout, alternated with this one

Each command runs in a fresh process from an empty folder; the figure is the median wall time.
The last column says whether torch, mlflow or optuna were imported (`python -X importtime`).
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
HEAVY = ("torch", "mlflow", "optuna", "pytorch_lightning")
COMMANDS = {
    "train.py --help": ["src/train.py", "--help"],
    "train.py num_layer=3 (typo)": ["src/train.py", "num_layer=3"],
    "predict.py --help": ["src/predict.py", "--help"],
    "compare.py --help": ["src/compare.py", "--help"],
}


def run_once(checkout: Path, args: list[str], cwd: str) -> tuple[float, set[str]]:
    cmd = [sys.executable, "-X", "importtime", str(checkout / args[0]), *args[1:]]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env)
    elapsed = time.perf_counter() - start
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    return elapsed, imported & set(HEAVY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--before", type=Path, help="another checkout to time alternately")
    args = parser.parse_args()
    checkouts = {"after": ROOT} if args.before is None else {"before": args.before, "after": ROOT}
    times = {(c, name): [] for c in checkouts for name in COMMANDS}
    heavy: dict[tuple[str, str], set[str]] = {}
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(args.reps):
            for name, cmd in COMMANDS.items():
                for label, checkout in checkouts.items():  # alternate A and B
                    elapsed, imported = run_once(checkout, cmd, cwd)
                    times[label, name].append(elapsed)
                    heavy[label, name] = imported
    print(f"median of {args.reps} runs, {len(os.sched_getaffinity(0))} cores\n")
    print("| command | " + " | ".join(f"{c} (s)" for c in checkouts) + " | heavy imports |")
    print("|---|" + "---|" * len(checkouts) + "---|")
    for name in COMMANDS:
        cells = [f"{statistics.median(times[c, name]):.2f}" for c in checkouts]
        after = ", ".join(sorted(heavy["after", name])) or "none"
        print(f"| `{name}` | " + " | ".join(cells) + f" | {after} |")


if __name__ == "__main__":
    main()
