"""Load a model only as it was written: its files checked against a record the artifact store cannot rewrite.

A pyfunc model is files in the artifact store (an S3 bucket, a shared directory):
``MLmodel``, the joblib estimator (a pickle, which runs code when loaded), and the
model's own code (``dispatch_model.py``, which MLflow executes at load time).
Whoever can write there can replace them, and the SHA-256 that ``MLmodel`` keeps
of the joblib file with them. The same holds for the native ``mlflow.sklearn``
model ``train`` logs (a pickle). So ``train`` and ``package_pyfunc`` record a
digest of every file of the model they log (:func:`record_files_digest`) as a
tag of the logged model in the tracking store, and every consumer here
(``serialize`` and ``evaluate``, the scoring server, batch and Spark scoring,
``ops.reproduce``) downloads the model into a private directory, compares, and
only then lets MLflow load it
(:func:`load_verified`, :func:`verified_download`): a changed, added or removed
file is refused before any of its bytes is unpickled or executed.

It protects against writes to the artifact store by someone who cannot write
the tracking store. It does not protect against someone who can write both (the
record can then be rewritten too), nor against a model loaded by path without
this check (``mlflow.pyfunc.load_model`` or ``mlflow.sklearn.load_model`` directly).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE

from core.digests import files_digest

FILES_DIGEST_TAG = "model.files_sha256"
# Written by MLflow into a copy downloaded through a registered URI (the name and version).
DOWNLOAD_ONLY_FILES = frozenset({"registered_model_meta"})


class UntrustedModel(MlflowException):
    """The model's files do not match the record of them (or there is no record). An
    ``MlflowException`` (``INVALID_STATE``, as the dispatch model's own digest check), so
    every command that reports MLflow's refusals in one line reports this one too."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_STATE)


def _content(path: Path) -> bytes:
    """A file's bytes, but for ``MLmodel`` its content without ``artifact_path``: where the
    model was stored, which moving the artifact store rewrites and MLflow does not load by."""
    if path.name != "MLmodel":
        return path.read_bytes()
    import yaml

    try:
        fields = yaml.safe_load(path.read_bytes())
    except yaml.YAMLError:
        return path.read_bytes()
    if not isinstance(fields, dict):
        return path.read_bytes()
    fields.pop("artifact_path", None)
    return json.dumps(fields, sort_keys=True, default=str).encode()


def directory_digest(path: str | Path) -> str:
    """SHA-256 over the relative names and contents of every file under ``path``."""
    root = Path(path)
    files = [
        p.relative_to(root) for p in root.rglob("*")
        if p.is_file() and str(p.relative_to(root)) not in DOWNLOAD_ONLY_FILES
    ]
    return files_digest(files, root=root, read=_content)


def record_files_digest(model_id: str) -> str:
    """Record the digest of logged model ``model_id``'s files as its tag; return it."""
    import mlflow
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory(prefix="model-") as tmp:
        digest = directory_digest(mlflow.artifacts.download_artifacts(f"models:/{model_id}", dst_path=tmp))
    MlflowClient().set_logged_model_tags(model_id, {FILES_DIGEST_TAG: digest})
    return digest


def resolve(model_uri: str) -> tuple[str, str | None, str]:
    """(URI of exactly this model, registered version or None, logged model id) for a
    ``models:/`` URI. An alias is read once, so the files checked are the ones loaded."""
    from mlflow import MlflowClient
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    if not model_uri.startswith("models:/"):
        raise UntrustedModel(
            f"cannot verify {model_uri}: only models:/ URIs (a registered version, an alias, "
            "or a logged model) have a record of their files"
        )
    client = MlflowClient()
    found = get_model_name_and_version(client, model_uri)
    if len(found) == 1:
        return f"models:/{found[0]}", None, found[0]
    name, version = found
    registered = client.get_model_version(name, str(version))
    source = registered.source or ""
    model_id = getattr(registered, "model_id", None) or (
        source.removeprefix("models:/") if source.startswith("models:/m-") else None
    )
    if not model_id:
        raise UntrustedModel(f"cannot verify {model_uri}: version {version} of {name} is not a logged model")
    return f"models:/{name}/{version}", str(version), model_id


def verified_download(model_uri: str, dst: str | Path) -> Path:
    """Download ``model_uri`` into ``dst`` and check its files against their record;
    ``UntrustedModel`` (naming the URI) if they differ or nothing was recorded."""
    import mlflow
    from mlflow import MlflowClient

    exact, _, model_id = resolve(model_uri)
    expected = MlflowClient().get_logged_model(model_id).tags.get(FILES_DIGEST_TAG)
    if not expected:
        raise UntrustedModel(
            f"refusing to load {model_uri}: logged model {model_id} has no record of its files "
            f"(tag {FILES_DIGEST_TAG}, written by train and package_pyfunc)"
        )
    local = Path(mlflow.artifacts.download_artifacts(exact, dst_path=str(dst)))
    actual = directory_digest(local)
    if not hmac.compare_digest(actual, expected):
        raise UntrustedModel(
            f"refusing to load {model_uri}: its files in the artifact store differ from those "
            f"recorded when it was logged (digest {actual[:12]}..., recorded {expected[:12]}...); "
            "a file was changed, added or removed after the model was logged"
        )
    return local


@contextlib.contextmanager
def verified_copy(model_uri: str) -> Iterator[Path]:
    """A private, verified copy of ``model_uri``'s files for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="verified-model-") as tmp:
        yield verified_download(model_uri, tmp)


def load_verified(model_uri: str, flavor=None):
    """``load_model`` of a verified copy of ``model_uri``, by ``flavor`` (a module such as
    ``mlflow.sklearn``; ``mlflow.pyfunc`` by default). Both flavors used here read the
    model into memory at load, so the copy is not needed afterwards."""
    import mlflow

    with verified_copy(model_uri) as local:
        return (flavor or mlflow.pyfunc).load_model(str(local))
