"""Aggregate training throughput of the latest sweep in a store: the samples all its runs trained
on, over the time from the first run's start to the last run's end (so several trials sharing a
GPU are measured against one trial by running this after each sweep).

    python bench/gpu_sharing.py --tracking-uri sqlite:////tmp/gpu_check/share4.db
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", default="lstm-mnist")
    args = parser.parse_args()

    from lstm_mnist.tracking import Store, SweepRecord, names

    store = Store(args.tracking_uri, args.experiment)
    sweep = SweepRecord.of(store, SweepRecord.find(store, "latest"))
    runs = [r for r in sweep.children() if r.info.status == "FINISHED"]
    if not runs:
        raise SystemExit("the latest sweep has no FINISHED run")
    samples = sum(int(r.data.params["max_steps"]) * int(r.data.params["batch_size"]) for r in runs)
    span_s = (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000
    gpus = sorted({r.data.tags.get(names.GPU, "-") for r in runs})
    print(
        f"{len(runs)} runs on GPU(s) {','.join(gpus)}: {samples} samples in {span_s:.1f} s"
        f" = {samples / span_s:.0f} samples/s aggregate"
    )


if __name__ == "__main__":
    main()
