"""Where a training command's wall time goes: the phase table of its runs (lstm_mnist/phases.py).

python bench/phases.py                                # the fast recipe, 3 runs of this checkout
python bench/phases.py --before /tmp/old-main         # alternated with another checkout's
python bench/phases.py --reps 1 -- max_steps=50 val_every=50      # any train.py overrides
python bench/phases.py --out phases.jsonl             # a line per run; run again, done runs kept

Each run is `python src/train.py OVERRIDES` in a fresh folder with its own SQLite store; its
phases are read back from the run's `time/*` metrics, and `exit` is what the command took after
the run's last phase (Hydra's job end, the interpreter's exit): the command's wall time measured
here less the run's `time/total_s`. The `floor` row is `python -c "import torch,
pytorch_lightning"`, timed in the same alternation: no command that trains can start faster.
Figures are medians over the repetitions; checkouts and the floor alternate within each.
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
if str(ROOT / "src") not in sys.path:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT / "src"))

from lstm_mnist.phases import PHASES, TOTAL, metric  # noqa: E402  (torch-free)

FLOOR = "floor"
EXIT = "exit"


def run_once(checkout: Path, overrides: list[str], folder: Path) -> dict[str, float]:
    """One training command run in `folder`, into its store (one per checkout, kept from run to
    run, as a user's is): its phases, `exit` and `whole` (its wall time), in seconds."""
    import mlflow

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    store = f"sqlite:///{folder}/mlflow.db"
    client = mlflow.MlflowClient(store)
    client.search_experiments()  # the store's tables exist before the first run, as they would
    cmd = [sys.executable, str(checkout / "src" / "train.py"), *overrides]
    cmd += [f"logger.tracking_uri={store}", f"hydra.run.dir={folder}/out"]
    cmd += [f"ckpt_dir={folder}/ckpt"]
    began = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=folder, env=env)
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    experiment = client.get_experiment_by_name("lstm-mnist")
    (run,) = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )
    recorded = run.data.metrics
    seconds = {p: recorded[metric(p)] for p in PHASES}
    return {**seconds, EXIT: wall - recorded[metric(TOTAL)], "whole": wall}


def floor_once() -> dict[str, float]:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, pytorch_lightning"], check=True)
    return {"whole": time.perf_counter() - began}


def table(results: dict[str, list[dict[str, float]]]) -> str:
    labels = [k for k in results if k != FLOOR]
    rows = [*PHASES, EXIT, "whole"]
    lines = [
        "| phase | " + " | ".join(f"{k} (s)" for k in labels) + " | what |",
        "|---|" + "---:|" * len(labels) + "---|",
    ]
    what = {**PHASES, EXIT: "after the run's last phase: Hydra's job end, the exit"}
    what["whole"] = "the command, as timed from outside"
    for row in rows:
        medians = [statistics.median(r[row] for r in results[k]) for k in labels]
        name = f"**{row}**" if row == "whole" else row
        lines.append(f"| {name} | " + " | ".join(f"{m:.1f}" for m in medians) + f" | {what[row]} |")
    outside = [statistics.median(r["whole"] - r["fit"] for r in results[k]) for k in labels]
    lines.append("| outside fit | " + " | ".join(f"{m:.1f}" for m in outside) + " | whole - fit |")
    if results.get(FLOOR):
        floor = statistics.median(r["whole"] for r in results[FLOOR])
        lines.append(
            f'\nfloor: `python -c "import torch, pytorch_lightning"` {floor:.1f} s (median)'
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another checkout to run alternately")
    parser.add_argument("--out", type=Path, help="a JSON line per run; its runs are not rerun")
    parser.add_argument("overrides", nargs="*", default=["+experiment=fast"])
    args = parser.parse_args()
    checkouts = {"after": ROOT} if args.before is None else {"before": args.before, "after": ROOT}
    results: dict[str, list[dict[str, float]]] = {k: [] for k in [*checkouts, FLOOR]}
    done = set()
    if args.out is not None and args.out.exists():
        for line in args.out.read_text().splitlines():
            case = json.loads(line)
            if case["overrides"] == args.overrides and case["label"] in results:
                results[case["label"]].append(case["seconds"])
                done.add((case["label"], case["rep"]))
    tmp = tempfile.TemporaryDirectory()
    folders = {label: Path(tmp.name) / label for label in checkouts}
    for folder in folders.values():
        folder.mkdir()
    for rep in range(args.reps):
        for label in [*checkouts, FLOOR]:  # alternate: the machine may be shared
            if (label, rep) in done:
                continue
            if label == FLOOR:
                seconds = floor_once()
            else:
                seconds = run_once(checkouts[label], args.overrides, folders[label])
            results[label].append(seconds)
            print(f"{label} {rep + 1}/{args.reps}: {seconds['whole']:.1f} s", file=sys.stderr)
            if args.out is not None:
                case = {"label": label, "rep": rep, "overrides": args.overrides}
                with args.out.open("a") as out:
                    out.write(json.dumps({**case, "seconds": seconds}) + "\n")
    cores = len(os.sched_getaffinity(0))
    print(f"python src/train.py {' '.join(args.overrides)}: median of {args.reps}, {cores} cores\n")
    print(table(results))


if __name__ == "__main__":
    main()
