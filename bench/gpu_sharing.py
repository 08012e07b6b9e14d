"""Aggregate training throughput of the latest sweep in a store: the samples all its runs trained
on, over the time from the first run's start to the last run's end (so several trials sharing a
GPU are measured against one trial by running this after each sweep).

    python bench/gpu_sharing.py --tracking-uri sqlite:////tmp/gpu_check/share4.db

It reads the store with MLflow's client alone, by the tags the tracked runs carry (their keys are
defined in lstm_mnist's tracking names; repeated here so this script depends on no module of it).
"""

from __future__ import annotations

import argparse

EXPERIMENT = "lstm-mnist"
SWEEP_KEY = "sweep_key"  # on a sweep's parent run
SWEEP_RUN = "sweep_run"  # on each job's run: its sweep's parent run
PARENT_RUN = "mlflow.parentRunId"  # MLflow's nesting (the jobs of older sweeps have only this)
CONFIGURATION = "configuration"  # on a configuration's run (replicates=N), not a job's
CONFIG_HASH = "config_hash"
OPTUNA_TRIAL = "optuna_trial"
GPU = "gpu"


def all_runs(client, experiment_id: str, query: str) -> list:
    """Every run matching `query`, page after page."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], query, page_token=token)
        runs += page
        if not (token := page.token):
            return runs


def latest_sweep_jobs(client, experiment_name: str) -> list:
    """The job runs of the latest sweep, oldest first; only the latest run of each job (config
    hash, or Optuna trial and config hash) when one was run more than once."""
    experiment = client.get_experiment_by_name(experiment_name)
    parents = experiment and client.search_runs(
        [experiment.experiment_id],
        f"tags.{SWEEP_KEY} != ''",
        order_by=["start_time DESC"],
        max_results=1,
    )
    if not parents:
        raise SystemExit(f"no sweep in experiment {experiment_name!r}; run one with -m")
    parent_id = parents[0].info.run_id
    found = {}
    for tag in (SWEEP_RUN, PARENT_RUN):
        for run in all_runs(client, experiment.experiment_id, f"tags.`{tag}` = '{parent_id}'"):
            found[run.info.run_id] = run
    latest = {}
    for run in sorted(found.values(), key=lambda r: r.info.start_time):
        tags = run.data.tags
        if CONFIGURATION in tags:
            continue
        trial = tags.get(OPTUNA_TRIAL)
        job = f"{trial} {tags.get(CONFIG_HASH)}" if trial else tags.get(CONFIG_HASH)
        latest[job or run.info.run_id] = run
    return list(latest.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", default=EXPERIMENT)
    args = parser.parse_args()

    import mlflow

    client = mlflow.MlflowClient(args.tracking_uri)
    runs = [r for r in latest_sweep_jobs(client, args.experiment) if r.info.status == "FINISHED"]
    if not runs:
        raise SystemExit("the latest sweep has no FINISHED run")
    samples = sum(int(r.data.params["max_steps"]) * int(r.data.params["batch_size"]) for r in runs)
    span_s = (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000
    gpus = sorted({r.data.tags.get(GPU, "-") for r in runs})
    print(
        f"{len(runs)} runs on GPU(s) {','.join(gpus)}: {samples} samples in {span_s:.1f} s"
        f" = {samples / span_s:.0f} samples/s aggregate"
    )


if __name__ == "__main__":
    main()
