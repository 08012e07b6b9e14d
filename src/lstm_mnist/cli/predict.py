"""Classify your own digit images with a model from the MLflow store.

    python src/predict.py my_digit.png scan.jpg                # the best run by the objective
    python src/predict.py *.png --run 3f2c0d...                # a given run
    python src/predict.py *.png --run best --sweep multirun/2026-11-27/10-19-59

Any size or format Pillow reads, colour or grey, dark-on-light or light-on-dark.
"""

from __future__ import annotations

import argparse
import sys

from lstm_mnist.cli import ExitCode, add_store_options, fail, quiet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--run", default="best", help="a run id, or 'best' (by the objective)")
    parser.add_argument("--sweep", help="with --run best: only runs of this sweep_id")
    add_store_options(parser)
    args = parser.parse_args(argv)
    quiet()

    import mlflow
    import torch

    from lstm_mnist.digits import load_grey, to_mnist
    from lstm_mnist.tracking.names import Objective
    from lstm_mnist.tracking.store import Store

    store = Store(args.tracking_uri, args.experiment)
    try:
        run_id = (
            store.best_model_run(Objective.default(), args.sweep)
            if args.run == "best"
            else args.run
        )
    except ValueError as err:
        fail(err)
    mlflow.set_tracking_uri(store.uri)
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
    sys.exit(ExitCode.FAILED if failed else ExitCode.OK)
