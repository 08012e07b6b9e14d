"""Classify your own digit images with a model from the MLflow store.

    python src/predict.py my_digit.png scan.jpg                # the best run (highest val_acc)
    python src/predict.py *.png --run 3f2c0d...                # a given run
    python src/predict.py *.png --run best --sweep multirun/2026-11-27/10-19-59

Any size or format Pillow reads, colour or grey, dark-on-light or light-on-dark.
"""

from __future__ import annotations

import argparse
import os
import sys

import mlflow
import torch

from lstm_mnist.digits import load_grey, to_mnist


def best_run_id(client: mlflow.MlflowClient, experiment: str, sweep: str | None) -> str:
    """The finished run with the highest val_acc (optionally within one sweep) that has a model."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"error: no experiment {experiment!r} in {client.tracking_uri}")
    query = "attributes.status = 'FINISHED'" + (f" and tags.sweep_id = '{sweep}'" if sweep else "")
    runs = client.search_runs([exp.experiment_id], query, order_by=["metrics.val_acc DESC"])
    for run in runs:
        if client.search_logged_models([exp.experiment_id], f"source_run_id = '{run.info.run_id}'"):
            return run.info.run_id
    where = f"sweep {sweep!r}" if sweep else f"experiment {experiment!r}"
    raise SystemExit(f"error: no finished run with a logged model in {where}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--run", default="best", help="a run id, or 'best' (highest val_acc)")
    parser.add_argument("--sweep", help="with --run best: only runs of this sweep_id")
    parser.add_argument("--experiment", default="lstm-mnist")
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
        help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    mlflow.set_tracking_uri(args.tracking_uri)
    client = mlflow.MlflowClient()
    run_id = best_run_id(client, args.experiment, args.sweep) if args.run == "best" else args.run
    model = mlflow.pytorch.load_model(f"runs:/{run_id}/model", map_location="cpu")
    print(f"model of run {run_id}", file=sys.stderr)

    failed = 0
    for path in args.images:
        try:
            x = to_mnist(load_grey(path))
        except Exception as err:  # one bad file must not stop the others
            print(f"{path}: error: {err}", file=sys.stderr)
            failed += 1
            continue
        with torch.no_grad():
            probs = model(x.unsqueeze(0))[0]
        digit = int(probs.argmax())
        print(f"{path}: {digit} (p={probs[digit]:.3f})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
