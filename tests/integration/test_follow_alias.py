"""Following the champion alias in a real store (serving/follower.py): a new version is
loaded verified and checked, then swapped in; a version whose files were changed in the
artifact store is refused and the served one kept; a pinned version never moves."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

from serving.follower import Follower
from tests.support.factories import FEATURES, package

NAME = "iris-classifier"
URI = f"models:/{NAME}@champion"
ROWS = pd.DataFrame([[1.4, 0.2], [6.0, 2.5]], columns=FEATURES)


def the_model(model):
    """The "app" each version gets here: the loaded pyfunc itself."""
    return model


def new_version(tmp_path, cfg, C: float) -> str:
    """A version of another model (a logistic regression with ``C``), validated; its number."""
    import mlflow

    info, _, _ = package(LogisticRegression(C=C, max_iter=5000), tmp_path, cfg)
    version = mlflow.register_model(info.model_uri, NAME).version
    MlflowClient().set_model_version_tag(NAME, version, "validation_status", "passed")
    return str(version)


def test_a_new_champion_is_swapped_in_and_the_old_one_still_answers(champion, tmp_path, cfg):
    follower = Follower(URI, the_model, poll_interval=1)
    old = follower.start_serving()
    assert old.version == champion["registered_model_version"] and follower.check() == "current"
    version = new_version(tmp_path, cfg, C=0.01)
    MlflowClient().set_registered_model_alias(NAME, "champion", version)
    assert follower.check() == "swapped"
    new = follower.current
    assert (new.version, new.uri) == (version, f"models:/{NAME}/{version}")
    before = old.app.predict(ROWS, params={"predict_method": "predict_proba"})
    after = new.app.predict(ROWS, params={"predict_method": "predict_proba"})
    assert before.shape == after.shape and abs(before - after).max() > 0.01  # two models, both answering


def test_a_tampered_champion_is_refused_and_the_served_version_kept(champion, tmp_path, cfg):
    follower = Follower(URI, the_model, poll_interval=1)
    served = follower.start_serving()
    version = new_version(tmp_path, cfg, C=0.01)
    client = MlflowClient()
    model_id = client.get_model_version(NAME, version).source.removeprefix("models:/")
    stored = Path(client.get_logged_model(model_id).artifact_location.removeprefix("file://"))
    joblib_file = stored / "artifacts" / "estimator.joblib"
    joblib_file.write_bytes(joblib_file.read_bytes() + b"\0")
    client.set_registered_model_alias(NAME, "champion", version)
    assert follower.check() == "refused"
    assert follower.current is served
    status = follower.status()
    assert status["last_refused"]["version"] == version
    assert "differ from those recorded when it was logged" in status["last_check"]["error"]
    assert follower.check() == "not_retried"


def test_a_pinned_version_never_moves(champion, tmp_path, cfg):
    v1 = champion["registered_model_version"]
    follower = Follower(f"models:/{NAME}/{v1}", the_model, poll_interval=1)
    assert follower.start_serving().version == v1
    MlflowClient().set_registered_model_alias(NAME, "champion", new_version(tmp_path, cfg, C=0.01))
    assert follower.check() == "pinned" and follower.current.version == v1
    before = follower.status()["last_check"]
    follower.start()
    time.sleep(2.5)  # two poll intervals and more: nothing polls
    follower.stop()
    assert follower.status()["last_check"] == before and follower.current.version == v1
