"""Load a model only as it was written: its files checked against a record the artifact store cannot rewrite.

A pyfunc model is files in the artifact store (an S3 bucket, a shared directory):
``MLmodel``, the joblib estimator (a pickle, which runs code when loaded), and the
model's own code (``dispatch_model.py``, which MLflow executes at load time).
Whoever can write there can replace them, and the SHA-256 that ``MLmodel`` keeps
of the joblib file with them. The same holds for the native ``mlflow.sklearn``
model ``train`` logs (a pickle). So ``train`` and ``package_pyfunc`` record a
digest of every file of the model they log as a tag of the logged model in the tracking store
(:func:`log_model_recorded`): the digest of the files as MLflow uploads them, taken
from the local folder it uploads, then compared with the files the store holds after
the upload (a difference fails the step; nothing is registered). Every consumer here
(``serialize`` and ``evaluate``, the scoring server, batch and Spark scoring,
``ops.reproduce``) downloads the model into a private directory, compares, and
only then lets MLflow load it
(:func:`load_verified`, :func:`verified_download`): a changed, added or removed
file is refused before any of its bytes is unpickled or executed. Spark's executors
compare the copy shipped with the job with the same record (:func:`check_files`,
from ``serving.spark_executor``).

Data files one step hands to the next (the training and holdout Parquet files, the
data contract) are recorded the same way, by run tag ``artifact.sha256.<path>``
(:func:`log_artifact_recorded`), and read back only through :func:`verified_artifact`.

It protects against writes to the artifact store by someone who cannot write
the tracking store. It does not protect against someone who can write both (the
record can then be rewritten too), nor against a model loaded by path without
this check (``mlflow.pyfunc.load_model`` or ``mlflow.sklearn.load_model`` directly).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE, RESOURCE_DOES_NOT_EXIST

from core.digests import files_digest

FILES_DIGEST_TAG = "model.files_sha256"
ARTIFACT_DIGEST_TAG_PREFIX = "artifact.sha256."  # + the artifact's path in its run
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
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and str(p.relative_to(root)) not in DOWNLOAD_ONLY_FILES
    ]
    return files_digest(files, root=root, read=_content)


def stored_digest(model_id: str) -> str:
    """The digest of logged model ``model_id``'s files as the artifact store holds them now."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="model-") as tmp:
        return directory_digest(mlflow.artifacts.download_artifacts(f"models:/{model_id}", dst_path=tmp))


@contextlib.contextmanager
def uploads_digested() -> Iterator[dict[str, str]]:
    """Within the block, the digest of the files of each model MLflow logs (model id ->
    digest), taken from the private local folder ``Model.log`` uploads, just before it
    uploads it: the record describes what was written, and no writer of the artifact
    store can change it between the upload and the record. MLflow offers no hook there:
    ``MlflowClient.log_model_artifacts``, the public call that uploads a logged model's
    folder, is wrapped for the block."""
    from mlflow import MlflowClient

    sent: dict[str, str] = {}
    upload = MlflowClient.log_model_artifacts

    def log_model_artifacts(self, model_id, local_dir, artifact_path=None):
        if artifact_path is None:  # the model's folder itself
            sent[model_id] = directory_digest(local_dir)
        return upload(self, model_id, local_dir, artifact_path)

    MlflowClient.log_model_artifacts = log_model_artifacts
    try:
        yield sent
    finally:
        MlflowClient.log_model_artifacts = upload


def log_model_recorded(log_model: Callable[[], object]):
    """Call ``log_model()`` (an ``mlflow.<flavor>.log_model(...)``), record the digest of the
    files it uploaded as tag :data:`FILES_DIGEST_TAG` of the logged model, and check the
    artifact store's copy against it; return the ``ModelInfo``. ``UntrustedModel`` when the
    stored files differ from those uploaded (changed during or right after the upload)."""
    from mlflow import MlflowClient

    with uploads_digested() as sent:
        info = log_model()
    digest = sent.get(info.model_id)
    if digest is None:
        raise UntrustedModel(
            f"logged model {info.model_id}: its files were not uploaded as a model's folder; nothing to record"
        )
    MlflowClient().set_logged_model_tags(info.model_id, {FILES_DIGEST_TAG: digest})
    stored = stored_digest(info.model_id)
    if not hmac.compare_digest(stored, digest):
        raise UntrustedModel(
            f"logged model {info.model_id}: its files in the artifact store differ from those uploaded "
            f"(digest {stored[:12]}..., uploaded {digest[:12]}...); a file was changed, added or removed "
            "during or right after the upload"
        )
    return info


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def log_artifact_recorded(local_path: str | Path, artifact_path: str) -> str:
    """Log file ``local_path`` as artifact ``artifact_path`` (folder and name) of the active
    run, its SHA-256 recorded first as run tag ``artifact.sha256.<artifact_path>``, then
    checked against the stored copy; return its ``runs:/`` URI. ``UntrustedModel`` when
    the stored copy differs."""
    import mlflow

    run_id = mlflow.active_run().info.run_id
    folder, _, name = artifact_path.rpartition("/")
    if name != Path(local_path).name:
        raise ValueError(f"artifact {artifact_path}: the file must be named {name}, not {Path(local_path).name}")
    digest = sha256_of(local_path)
    mlflow.set_tag(ARTIFACT_DIGEST_TAG_PREFIX + artifact_path, digest)
    mlflow.log_artifact(str(local_path), artifact_path=folder or None)
    uri = f"runs:/{run_id}/{artifact_path}"
    with verified_artifact(uri):
        pass
    return uri


@contextlib.contextmanager
def verified_artifact(uri: str) -> Iterator[Path]:
    """A private copy of artifact ``uri`` (``runs:/<run>/<path>``) checked against the digest
    its run recorded (:func:`log_artifact_recorded`), for the duration of the block.
    ``UntrustedModel`` naming the URI when it differs or nothing was recorded."""
    import mlflow
    from mlflow import MlflowClient

    run_id, _, artifact_path = uri.removeprefix("runs:/").partition("/")
    if not uri.startswith("runs:/") or not run_id or not artifact_path:
        raise UntrustedModel(f"cannot verify {uri}: only runs:/<run id>/<path> artifacts have a recorded digest")
    expected = MlflowClient().get_run(run_id).data.tags.get(ARTIFACT_DIGEST_TAG_PREFIX + artifact_path)
    if not expected:
        raise UntrustedModel(
            f"refusing to read {uri}: its run has no record of its digest "
            f"(tag {ARTIFACT_DIGEST_TAG_PREFIX}{artifact_path})"
        )
    with tempfile.TemporaryDirectory(prefix="verified-artifact-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        actual = sha256_of(local)
        if not hmac.compare_digest(actual, expected):
            raise UntrustedModel(
                f"refusing to read {uri}: the file in the artifact store differs from the one logged "
                f"(sha256 {actual[:12]}..., recorded {expected[:12]}...)"
            )
        yield local


def resolve(model_uri: str) -> tuple[str, str | None, str]:
    """(URI of exactly this model, registered version or None, logged model id) for a
    ``models:/`` URI. An alias is read once, so the files checked are the ones loaded, and
    as ``core.registry.alias_target`` reads it (as it was before a change under way)."""
    from mlflow import MlflowClient
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    if not model_uri.startswith("models:/"):
        raise UntrustedModel(
            f"cannot verify {model_uri}: only models:/ URIs (a registered version, an alias, "
            "or a logged model) have a record of their files"
        )
    from core.registry import alias_target

    client = MlflowClient()
    name, at, alias = model_uri.removeprefix("models:/").partition("@")
    if at and "/" not in name:  # read as every reader here reads an alias: never half a change
        version = alias_target(client, name, alias)
        if version is None:
            raise MlflowException(
                f"Registered model {name!r} has no alias {alias!r} ({model_uri})", error_code=RESOURCE_DOES_NOT_EXIST
            )
        model_uri = f"models:/{name}/{version}"
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


def recorded_files(model_uri: str) -> tuple[str, str]:
    """(URI of exactly this model, the digest of its files recorded when it was logged);
    ``UntrustedModel`` (naming the URI) if nothing was recorded."""
    from mlflow import MlflowClient

    exact, _, model_id = resolve(model_uri)
    expected = MlflowClient().get_logged_model(model_id).tags.get(FILES_DIGEST_TAG)
    if not expected:
        raise UntrustedModel(
            f"refusing to load {model_uri}: logged model {model_id} has no record of its files "
            f"(tag {FILES_DIGEST_TAG}, written by train and package_pyfunc)"
        )
    return exact, expected


def check_files(local: Path, expected: str, refusal: str) -> None:
    """``UntrustedModel`` saying ``refusal`` and both digests unless the files under
    ``local`` have the digest ``expected`` (:func:`recorded_files`)."""
    actual = directory_digest(local)
    if not hmac.compare_digest(actual, expected):
        raise UntrustedModel(
            f"{refusal} (digest {actual[:12]}..., recorded {expected[:12]}...); "
            "a file was changed, added or removed after the model was logged"
        )


def verified_download(model_uri: str, dst: str | Path) -> Path:
    """Download ``model_uri`` into ``dst`` and check its files against their record;
    ``UntrustedModel`` (naming the URI) if they differ or nothing was recorded."""
    import mlflow

    exact, expected = recorded_files(model_uri)
    local = Path(mlflow.artifacts.download_artifacts(exact, dst_path=str(dst)))
    check_files(
        local,
        expected,
        f"refusing to load {model_uri}: its files in the artifact store differ from those recorded when it was logged",
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
