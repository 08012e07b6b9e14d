"""Classify your own digit images with a model from the MLflow store, or register that model.

    python src/predict.py my_digit.png scan.jpg            # the best run's model, by the objective
    python src/predict.py *.png --run 3f2c0d...            # a given run's model
    python src/predict.py *.png --sweep latest             # the best of the latest sweep
    python src/predict.py --sweep latest --register lstm-mnist --alias champion
    python src/predict.py *.png --model models:/lstm-mnist@champion   # or models:/lstm-mnist/1

Any size or format Pillow reads, colour or grey, dark-on-light or light-on-dark.
"""

from __future__ import annotations

import argparse
import sys

from lstm_mnist.cli import ExitCode, add_store_options, add_sweep_option, fail, quiet
from lstm_mnist.tracking.registry import (
    MODEL_FORMS,
    check_alias,
    find_in_registry,
    parse_model_uri,
    register,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", nargs="*", help="image files")
    parser.add_argument("--run", help="a run id, or 'best' (by the objective; the default)")
    parser.add_argument(
        "--model", metavar="URI", help=f"a model of the registry instead of a run's: {MODEL_FORMS}"
    )
    parser.add_argument(
        "--register", metavar="NAME", help="register the model in MLflow's registry as NAME"
    )
    parser.add_argument(
        "--alias",
        action="append",
        default=[],
        help="with --register: point this alias at the new version (repeatable; moves it"
        " from an older one)",
    )
    add_store_options(parser)
    add_sweep_option(parser, default=None)
    parser.epilog = "\n".join(__doc__.splitlines()[2:8])
    args = parser.parse_args(argv)
    if args.alias and not args.register:
        parser.error("--alias needs --register NAME (it names a version that registering makes)")
    if not args.images and not args.register:
        parser.error("give image files to classify, or --register NAME")
    if args.model and (args.run or args.sweep or args.register):
        given = "--run" if args.run else "--sweep" if args.sweep else "--register"
        parser.error(f"--model names the model itself: drop {given}, or drop --model")
    try:  # before the store's check: a typo answers at once, and nothing is registered
        for alias in args.alias:
            check_alias(alias)
        if args.model:
            parse_model_uri(args.model)
    except ValueError as err:
        fail(err)
    quiet()

    from lstm_mnist.tracking import Store, StoreError

    store = Store(args.tracking_uri, args.experiment, option="--tracking-uri")
    try:  # before torch's import (seconds): a wrong store answers at once
        # the registry is the store's, not an experiment's
        store.check(experiment=not args.model, reading=True)
    except StoreError as err:
        fail(err)

    from lstm_mnist.tracking import Objective, SweepRecord

    try:  # before torch's import too: a mistyped model or run answers at once
        if args.model:
            model_uri, source = args.model, find_in_registry(store, args.model)
        else:
            if args.run not in (None, "best"):
                logged = store.model_of(args.run)
            else:
                parent = SweepRecord.find(store, args.sweep).info.run_id if args.sweep else None
                logged = store.best_model(Objective.default(), parent)
            model_uri, source = logged.model_uri, f"of run {logged.source_run_id}"
    except ValueError as err:
        fail(err)

    import mlflow
    import torch
    from mlflow.exceptions import MlflowException

    from lstm_mnist.digits import load_grey, to_mnist

    mlflow.set_tracking_uri(store.uri)
    print(f"model {model_uri} {source}", file=sys.stderr)
    if args.register:
        aliases = list(dict.fromkeys(args.alias))  # in the order given, once each
        version = register(store, model_uri, args.register, aliases)
        shown = ", ".join(f"models:/{version.name}@{alias}" for alias in aliases)
        print(
            f"registered as models:/{version.name}/{version.version}"
            + (f" (aliases: {shown})" if shown else "")
        )
    if not args.images:
        sys.exit(ExitCode.OK)

    try:
        model = mlflow.pytorch.load_model(model_uri, map_location="cpu")
    except MlflowException as err:  # e.g. models:/NAME/latest of a model without versions
        fail(f"{model_uri}: {err}")
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
