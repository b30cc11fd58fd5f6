"""Reading the Model Registry: version URIs and aliases, failing closed."""

from __future__ import annotations


def parse_registered_uri(model_uri: str) -> tuple[str, str]:
    """``models:/<name>/<version>`` -> (name, version); anything else is a ``ValueError``."""
    prefix = "models:/"
    body = model_uri[len(prefix) :] if model_uri.startswith(prefix) else ""
    name, _, model_version = body.rpartition("/")
    if not name or not model_version.isdigit():
        raise ValueError(
            f"{model_uri!r} is not a registered version URI of the form models:/<name>/<version>"
        )
    return name, model_version


def alias_version(client, name: str, alias: str):
    """The model version holding ``alias`` on registered model ``name``; None only when
    the registry says so (no such model, or the model has no such alias).

    Fails closed: any other error reading the registry (a timeout, a server error
    after retries) is raised, so no caller mistakes "could not read the champion"
    for "there is no champion" and promotes past the gate.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    try:
        model = client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    version = model.aliases.get(alias)
    return None if version is None else client.get_model_version(name, str(version))
