"""Classify your own digit images with a model from the MLflow store, or register that model.

    python src/predict.py my_digit.png scan.jpg            # the best run's model, by the objective
    python src/predict.py *.png --run 3f2c0d...            # a given run's model
    python src/predict.py *.png --sweep latest             # the best of the latest sweep
    python src/predict.py --sweep latest --register lstm-mnist   # then: models:/lstm-mnist/1

Any size or format Pillow reads, colour or grey, dark-on-light or light-on-dark.
"""

from __future__ import annotations

import argparse
import sys

from lstm_mnist.cli import ExitCode, add_store_options, add_sweep_option, fail, quiet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", nargs="*", help="image files")
    parser.add_argument("--run", default="best", help="a run id, or 'best' (by the objective)")
    parser.add_argument(
        "--register", metavar="NAME", help="register the model in MLflow's registry as NAME"
    )
    add_store_options(parser)
    add_sweep_option(parser, default=None)
    parser.epilog = "\n".join(__doc__.splitlines()[2:7])
    args = parser.parse_args(argv)
    if not args.images and not args.register:
        parser.error("give image files to classify, or --register NAME")
    quiet()

    from lstm_mnist.tracking import Store, StoreError

    store = Store(args.tracking_uri, args.experiment, option="--tracking-uri")
    try:  # before torch's import (seconds): a wrong store answers at once
        store.check(experiment=True)
    except StoreError as err:
        fail(err)

    import mlflow
    import torch

    from lstm_mnist.digits import load_grey, to_mnist
    from lstm_mnist.tracking import Objective, SweepRecord

    try:
        if args.run != "best":
            logged = store.model_of(args.run)
        else:
            parent = SweepRecord.find(store, args.sweep).info.run_id if args.sweep else None
            logged = store.best_model(Objective.default(), parent)
    except ValueError as err:
        fail(err)
    mlflow.set_tracking_uri(store.uri)
    print(f"model {logged.model_uri} of run {logged.source_run_id}", file=sys.stderr)
    if args.register:
        version = mlflow.register_model(logged.model_uri, args.register)
        print(f"registered as models:/{version.name}/{version.version}")
    if not args.images:
        sys.exit(ExitCode.OK)

    model = mlflow.pytorch.load_model(logged.model_uri, map_location="cpu")
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
