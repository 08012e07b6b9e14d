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
import re
import sys
from typing import TYPE_CHECKING

from lstm_mnist.cli import ExitCode, add_store_options, add_sweep_option, fail, quiet

if TYPE_CHECKING:
    from lstm_mnist.tracking import Store

# MLflow's own rules for an alias (mlflow/utils/validation.py), checked before anything is
# registered: otherwise a bad one fails after the new version exists, without its alias.
ALIAS = re.compile(r"[\w-]{1,255}")
VERSION_LIKE = re.compile(r"[vV]\d+")  # MLflow reserves these for version numbers
ALIASES_ALLOWED = "an alias is 1 to 255 letters, digits, '_' or '-', and not 'latest' or v<number>"
MODEL_FORMS = "models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME/latest or models:/<model id>"


def check_alias(alias: str) -> None:
    """Raise ValueError, naming `alias` and what is allowed, unless MLflow accepts it."""
    if not ALIAS.fullmatch(alias):
        raise ValueError(f"--alias {alias!r}: not allowed; {ALIASES_ALLOWED}")
    if alias.lower() == "latest" or VERSION_LIKE.fullmatch(alias):
        raise ValueError(f"--alias {alias}: reserved by MLflow; {ALIASES_ALLOWED}")


def parse_model_uri(uri: str) -> tuple[str, str, str]:
    """(name, kind, ref) of a models:/ URI, split as MLflow splits it: kind is 'alias',
    'version', 'other' ('latest' or a stage, which MLflow resolves itself) or 'id' (a logged
    model's id, in name). Raises ValueError for anything else (a runs:/ URI included: --run is
    for those)."""
    parts = uri.removeprefix("models:/").split("/") if uri.startswith("models:/") else []
    if len(parts) == 2 and parts[0] and parts[1]:
        return parts[0], "version" if parts[1].isdigit() else "other", parts[1]
    if len(parts) == 1 and "@" in parts[0]:
        name, alias = parts[0].rsplit("@", 1)
        if name and alias:
            return name, "alias", alias
    elif len(parts) == 1 and parts[0]:
        return parts[0], "id", ""
    raise ValueError(f"--model {uri}: not a models:/ URI that MLflow takes; give {MODEL_FORMS}")


def find_in_registry(store: Store, uri: str) -> str:
    """Where `uri` leads, e.g. '(version 2, of run <id>)'. Raises ValueError, naming what the
    registry has instead, if its model, version or alias is not there: asked before loading,
    whose own error is a traceback that names nothing that is there."""
    from mlflow.exceptions import MlflowException

    name, kind, ref = parse_model_uri(uri)
    client = store.client
    try:
        if kind == "id":
            model = client.get_logged_model(name)
            return f"(logged model of run {model.source_run_id})"
        registered = client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        if kind == "id":
            where = store.shown_uri
            raise ValueError(f"--model {uri}: no logged model {name!r} in {where}") from None
        names = [m.name for m in client.search_registered_models(max_results=20)]
        there = ", ".join(names) or "none"
        raise ValueError(
            f"--model {uri}: no registered model {name!r} in {store.shown_uri};"
            f" registered models: {there}"
        ) from None
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    if kind == "alias" and ref not in registered.aliases:
        aliases = registered.aliases.items()
        there = ", ".join(f"{a} (version {v})" for a, v in sorted(aliases)) or "none"
        raise ValueError(
            f"--model {uri}: model {name!r} has no alias {ref!r}; its aliases: {there};"
            f" its versions: {', '.join(map(str, versions)) or 'none'}"
        )
    if kind == "version" and int(ref) not in versions:
        raise ValueError(
            f"--model {uri}: model {name!r} has no version {ref};"
            f" its versions: {', '.join(map(str, versions)) or 'none'}"
        )
    if kind == "other":
        return f"(registered model {name!r})"  # 'latest' or a stage: MLflow picks the version
    found = (
        client.get_model_version_by_alias(name, ref)
        if kind == "alias"
        else client.get_model_version(name, ref)
    )
    return f"(version {found.version}, of run {found.run_id})"


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
        store.check(experiment=not args.model)  # the registry is the store's, not an experiment's
    except StoreError as err:
        fail(err)
    if args.model and (db := store.sqlite_file) is not None and not db.is_file():
        # (asking MLflow would create an empty store there)
        fail(f"--tracking-uri {store.uri}: no MLflow store there ({db.resolve()} does not exist)")

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
        version = mlflow.register_model(model_uri, args.register)
        for alias in aliases:  # MLflow moves an alias that named an older version
            store.client.set_registered_model_alias(version.name, alias, version.version)
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
