"""MLflow's model registry as predict.py uses it: alias rules checked before registering,
models:/ URIs checked against the registry before loading.

MLflow is imported inside the functions that call it, not at the top: MODEL_FORMS is in
predict.py's --help, which must import no MLflow (seconds) to answer at once."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from lstm_mnist.tracking.store import Store

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


def register(store: Store, model_uri: str, name: str, aliases: list[str]) -> ModelVersion:
    """Register `model_uri` as a new version of `name` in the store's registry and point each
    alias (checked first with check_alias) at it; return that version."""
    import mlflow

    # mlflow.register_model takes no URI: it registers in the tracking URI's registry
    mlflow.set_tracking_uri(store.uri)
    version = mlflow.register_model(model_uri, name)
    for alias in aliases:  # MLflow moves an alias that named an older version
        store.client.set_registered_model_alias(version.name, alias, version.version)
    return version
