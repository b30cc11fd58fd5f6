"""Tamper-proof loading (core/integrity.py): a model whose files were replaced in the
artifact store, even together with the digest MLmodel keeps of them, is refused before
any of its code runs; the record it is checked against lives in the tracking store."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from core import integrity
from model.dispatch_model import DIGEST_CONFIG_KEY

NAME = "iris-classifier"


class Payload:
    """A pickle that creates a file when it is loaded: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def stored_model_dir(version: str) -> Path:
    """Version ``version``'s directory in the test's artifact store."""
    client = MlflowClient()
    model = client.get_logged_model(client.get_model_version(NAME, version).source.removeprefix("models:/"))
    return Path(model.artifact_location.removeprefix("file://"))


def replace_estimator_and_its_digest(model_dir: Path, marker: Path) -> None:
    joblib_file = model_dir / "artifacts" / "estimator.joblib"
    joblib_file.write_bytes(pickle.dumps(Payload(marker)))
    mlmodel = model_dir / "MLmodel"
    fields = yaml.safe_load(mlmodel.read_text())
    fields["flavors"]["python_function"]["config"][DIGEST_CONFIG_KEY] = hashlib.sha256(
        joblib_file.read_bytes()
    ).hexdigest()
    mlmodel.write_text(yaml.safe_dump(fields))


def test_a_replaced_estimator_and_digest_are_refused_and_nothing_runs(champion, tmp_path):
    v1 = champion["registered_model_version"]
    model = integrity.load_verified(f"models:/{NAME}@champion")  # intact: loads
    assert model.metadata.metadata["estimator"] == "LogisticRegression"

    marker = tmp_path / "code-ran"
    replace_estimator_and_its_digest(stored_model_dir(v1), marker)
    for uri in (f"models:/{NAME}@champion", f"models:/{NAME}/{v1}", champion["pyfunc_model_uri"]):
        with pytest.raises(
            integrity.UntrustedModel,
            match=r"refusing to load .*: its files in the artifact store "
            r"differ from those recorded when it was logged",
        ):
            integrity.load_verified(uri)
    assert not marker.exists()
    # What the check prevents: MLflow alone finds the digest in MLmodel consistent and unpickles.
    mlflow.pyfunc.load_model(f"models:/{NAME}/{v1}")
    assert marker.exists()


def test_replaced_model_code_is_refused_before_it_runs(champion, tmp_path):
    marker = tmp_path / "code-ran"
    (code,) = stored_model_dir(champion["registered_model_version"]).glob("*.py")
    code.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n" + code.read_text())
    with pytest.raises(integrity.UntrustedModel):
        integrity.load_verified(f"models:/{NAME}@champion")
    assert not marker.exists()


def test_a_model_without_a_record_or_not_in_the_registry_is_refused(champion, tmp_path):
    client = MlflowClient()
    model_id = champion["pyfunc_model_uri"].removeprefix("models:/")
    client.delete_logged_model_tag(model_id, integrity.FILES_DIGEST_TAG)
    with pytest.raises(integrity.UntrustedModel, match=f"logged model {model_id} has no record of its files"):
        integrity.load_verified(champion["pyfunc_model_uri"])
    with pytest.raises(integrity.UntrustedModel, match="only models:/ URIs"):
        integrity.load_verified(str(tmp_path))


@pytest.mark.parametrize("step", ["serialize", "evaluate"])
def test_a_replaced_native_model_is_refused_before_it_is_unpickled(step, champion, cfg, tmp_path):
    """``train``'s native model is a pickle: ``serialize`` (which writes it with joblib)
    and ``evaluate`` (which checks the dispatch model against it) load it only as logged."""
    from steps import evaluate, serialize

    model_id = champion["model_uri"].removeprefix("models:/")
    stored = Path(MlflowClient().get_logged_model(model_id).artifact_location.removeprefix("file://"))
    marker = tmp_path / "code-ran"
    (stored / "model.pkl").write_bytes(pickle.dumps(Payload(marker)))
    run = {
        "serialize": lambda: serialize.run(champion["model_uri"], cfg),
        "evaluate": lambda: evaluate.run(
            f"models:/{NAME}/{champion['registered_model_version']}",
            champion["model_uri"],
            champion["holdout_uri"],
            cfg,
        ),
    }[step]
    with mlflow.start_run(), pytest.raises(integrity.UntrustedModel, match=f"refusing to load models:/{model_id}"):
        run()
    assert not marker.exists()
    mlflow.sklearn.load_model(champion["model_uri"])  # what MLflow alone would have done
    assert marker.exists()


def test_moving_the_artifact_store_keeps_the_record_valid(tmp_path):
    """MLmodel's artifact_path says where the model is stored; a store moved elsewhere
    (or copied, as these tests' stores are) rewrites it, and nothing else."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "MLmodel").write_text(yaml.safe_dump({"artifact_path": "file:///a/b", "flavors": {}}))
    before = integrity.directory_digest(model_dir)
    (model_dir / "MLmodel").write_text(yaml.safe_dump({"artifact_path": "file:///c/d", "flavors": {}}))
    assert integrity.directory_digest(model_dir) == before
    (model_dir / "MLmodel").write_text(yaml.safe_dump({"artifact_path": "file:///c/d", "flavors": {"x": 1}}))
    assert integrity.directory_digest(model_dir) != before


def test_a_model_file_changed_right_after_its_upload_fails_packaging_and_registers_nothing(champion, cfg, monkeypatch):
    """The record is the digest of what was uploaded, not of what the store holds afterwards:
    a writer of the artifact store who changes the model's code the moment MLflow has copied
    it gets a failed step, not a change recorded as genuine."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    from steps import package_pyfunc

    upload = LocalArtifactRepository.log_artifacts

    def log_artifacts(self, local_dir, artifact_path=None):
        upload(self, local_dir, artifact_path)
        for code in Path(self.artifact_dir, artifact_path or "").glob("*.py"):  # right after the copy
            code.write_text(code.read_text() + "\nimport os  # changed after the upload\n")

    monkeypatch.setattr(LocalArtifactRepository, "log_artifacts", log_artifacts)
    before = MlflowClient().search_model_versions(f"name = '{NAME}'")
    with mlflow.start_run(), pytest.raises(integrity.UntrustedModel, match="differ from those uploaded"):
        package_pyfunc.run(champion["joblib_uri"], champion["joblib_sha256"], champion["holdout_uri"], cfg)
    assert len(MlflowClient().search_model_versions(f"name = '{NAME}'")) == len(before)


def test_the_digest_recorded_is_that_of_the_files_uploaded(champion, cfg):
    from steps import package_pyfunc

    with mlflow.start_run():
        outputs = package_pyfunc.run(champion["joblib_uri"], champion["joblib_sha256"], champion["holdout_uri"], cfg)
    model_id = outputs["pyfunc_model_uri"].removeprefix("models:/")
    recorded = MlflowClient().get_logged_model(model_id).tags[integrity.FILES_DIGEST_TAG]
    assert recorded == integrity.stored_digest(model_id)
    integrity.load_verified(outputs["registered_model_uri"])


@pytest.mark.parametrize("artifact", ["data/holdout.parquet", "data/contract.yaml", "data/reference.json"])
def test_data_a_step_hands_on_is_read_only_as_it_was_logged(artifact, champion, cfg):
    """train records the SHA-256 of the holdout, the contract and the reference profile; package_pyfunc and evaluate
    refuse a copy that differs (here: a row appended to the stored holdout's bytes)."""
    from steps import evaluate, package_pyfunc

    train_run = champion["holdout_uri"].removeprefix("runs:/").split("/")[0]
    stored = Path(MlflowClient().get_run(train_run).info.artifact_uri.removeprefix("file://")) / artifact
    stored.write_bytes(stored.read_bytes() + b"\n")
    uri = f"runs:/{train_run}/{artifact}"
    with pytest.raises(
        integrity.UntrustedModel,
        match=f"refusing to read {uri}: the file in the artifact store differs from the one logged",
    ):
        with integrity.verified_artifact(uri):
            pass
    run = (
        (lambda: package_pyfunc.run(champion["joblib_uri"], champion["joblib_sha256"], champion["holdout_uri"], cfg))
        if artifact != "data/holdout.parquet"
        else (
            lambda: evaluate.run(
                f"models:/{NAME}/{champion['registered_model_version']}",
                champion["model_uri"],
                champion["holdout_uri"],
                cfg,
            )
        )
    )
    with mlflow.start_run(), pytest.raises(integrity.UntrustedModel, match="refusing to read"):
        run()
