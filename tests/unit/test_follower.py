"""Following an alias (serving/follower.py) with a registry and loads faked: when a version
is loaded, swapped in, refused and tried again; what the model check refuses
(serving/model_check.py); the directory the workers share (serving/workers.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from serving.follower import Follower, parse_alias
from serving.model_check import ModelCheckFailed, output_problem
from serving.served import Served
from serving.workers import Shared

URI = "models:/iris-classifier@champion"


class Registry:
    """The alias's version (``alias``), or ``error`` raised when read; the loads asked for."""

    def __init__(self, alias: str | None = "1"):
        self.alias, self.error, self.loads, self.broken = alias, None, [], {}

    def read(self, name: str, alias: str) -> str | None:
        assert (name, alias) == ("iris-classifier", "champion")
        if self.error:
            raise self.error
        return self.alias

    def load(self, uri: str, build_app) -> Served:
        self.loads.append(uri)
        version = uri.rpartition("/")[2]
        if version in self.broken:
            raise self.broken[version]
        return Served("iris-classifier", version, uri, f"m-{version}", build_app(version), time.time(), 0.01)


@pytest.fixture
def registry():
    return Registry()


def follower(registry: Registry, uri: str = URI, **options) -> Follower:
    f = Follower(uri, lambda version: f"app of {version}", read=registry.read, load=registry.load, **options)
    f.start_serving()
    return f


def test_the_alias_is_parsed_and_other_uris_are_pinned():
    assert parse_alias(URI) == ("iris-classifier", "champion")
    assert parse_alias("models:/iris classifier@champion") == ("iris classifier", "champion")
    for pinned in ("models:/iris-classifier/3", "models:/m-0123", "runs:/abc/model", "models:/a/b@c"):
        assert parse_alias(pinned) is None


def test_a_moved_alias_is_loaded_and_swapped_in_and_the_old_version_object_is_kept_intact(registry):
    f = follower(registry)
    old = f.current
    assert (old.version, f.check()) == ("1", "current")
    registry.alias = "2"
    assert f.check("webhook") == "swapped"
    assert (f.current.version, f.current.app, old.app) == ("2", "app of 2", "app of 1")
    assert registry.loads == ["models:/iris-classifier/1", "models:/iris-classifier/2"]
    assert f.status()["last_check"] | {"at": None} == {
        "at": None,
        "trigger": "webhook",
        "alias_version": "2",
        "outcome": "swapped",
        "error": None,
    }


def test_a_refused_version_is_tried_again_only_when_the_alias_moves_again(registry):
    from core.integrity import UntrustedModel

    f = follower(registry)
    registry.broken["2"] = UntrustedModel("refusing to load models:/iris-classifier/2: its files differ")
    registry.alias = "2"
    assert f.check() == "refused"
    assert f.current.version == "1"
    status = f.status()
    assert status["last_refused"]["version"] == "2" and "its files differ" in status["last_refused"]["error"]
    assert f.check() == "not_retried" and "its files differ" in f.status()["last_check"]["error"]
    assert registry.loads.count("models:/iris-classifier/2") == 1
    registry.alias = "1"
    assert f.check() == "current"
    registry.alias = "2"  # moved again: tried again
    registry.broken["2"] = ModelCheckFailed("predict_proba on the input example (5 rows): NaN in the output")
    assert f.check() == "refused" and "NaN" in f.status()["last_check"]["error"]
    registry.alias, registry.broken = None, {}  # deleted, then set again: a move
    assert f.check() == "no_alias" and f.current.version == "1"
    registry.alias = "2"
    assert f.check() == "swapped" and registry.loads.count("models:/iris-classifier/2") == 3


def test_an_unreadable_registry_keeps_the_version_served_and_is_read_again(registry):
    f = follower(registry)
    registry.error = ConnectionError("tracking server down")
    assert f.check() == "unreadable" and f.current.version == "1"
    assert f.status()["last_check"]["error"] == "cannot read the alias: ConnectionError; see the server's log"
    registry.error, registry.alias = None, "2"
    assert f.check() == "swapped"


def test_status_gives_the_registrys_errors_by_kind_only(registry, monkeypatch):
    """``/status`` answers any caller: no tracking URI, account, path or MLflow message in it."""
    import json

    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

    from serving.front import Front

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "reader")
    leaky = "API request to endpoint /api/2.0/mlflow/registered-models/alias failed with error code 403 != 200"
    f = follower(registry)
    registry.error = MlflowException(f"{leaky} (http://reader:pw@mlflow.internal:5000, /srv/mlflow)", PERMISSION_DENIED)
    assert f.check() == "unreadable"
    unreadable = json.dumps(Front(f, secret=None).status())
    registry.error, registry.alias = None, "2"
    registry.broken["2"] = OSError("[Errno 13] Permission denied: '/srv/mlflow/artifacts/2/model.pkl'")
    assert f.check() == "refused"
    status = unreadable + json.dumps(Front(f, secret=None).status())
    for secret in ("reader", "pw@", "mlflow.internal", "/srv/", "/api/", "Errno"):
        assert secret not in status, secret
    assert "the tracking server refused this server's account (HTTP 403)" in status
    assert "OSError; see the server's log" in status


def test_a_pinned_version_is_never_read_again(registry):
    f = follower(registry, "models:/iris-classifier/1", poll_interval=0.05)
    registry.alias = "2"
    assert f.check() == "pinned" and f.current.version == "1"
    before = f.status()["last_check"]
    f.start()
    time.sleep(0.5)  # ten poll intervals
    f.stop()
    assert f.status()["last_check"] == before and f.current.version == "1"
    assert f.status()["following"] is False and f.status()["alias"] is None


def test_the_server_does_not_start_on_an_alias_that_is_not_set(registry):
    from mlflow.exceptions import MlflowException

    registry.alias = None
    with pytest.raises(MlflowException, match="has no alias 'champion'"):
        follower(registry)


def test_a_wake_is_a_check_now_in_every_worker(registry, tmp_path):
    workers = [follower(registry, poll_interval=0, shared=Shared(tmp_path)) for _ in range(2)]
    workers[1].shared.own = tmp_path / "worker-other.json"  # two followers in one process
    for f in workers:
        f.start()
    try:
        registry.alias = "2"
        workers[0].wake()  # the one a webhook reached
        deadline = time.monotonic() + 10
        while any(f.current.version != "2" for f in workers) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [f.current.version for f in workers] == ["2", "2"]
        assert [f.last_check["trigger"] for f in workers] == ["webhook", "webhook"]
    finally:
        for f in workers:
            f.stop()


def test_workers_publish_their_status_and_dead_ones_are_left_out(tmp_path):
    shared = Shared(tmp_path)
    shared.publish({"pid": "me", "served": {"version": "1"}})
    (tmp_path / "worker-999999999.json").write_text('{"pid": 999999999}')
    assert shared.statuses() == [{"pid": "me", "served": {"version": "1"}}]
    assert not (tmp_path / "worker-999999999.json").exists()
    assert shared.wake_mark() == ""
    shared.signal_wake()
    assert shared.wake_mark() != ""


CLASSES = [0, 1, 2]


@pytest.mark.parametrize(
    ("method", "output", "problem"),
    [
        ("predict", np.array([0, 1]), None),
        ("predict", np.array([0, 1, 2]), "expected 2 labels"),
        ("predict", np.array([0, 7]), "label 7 is not one of the classes"),
        ("predict_proba", np.array([[1.0, 0, 0], [0.2, 0.3, 0.5]]), None),
        ("predict_proba", np.array([[1.0, 0], [0.5, 0.5]]), "expected shape (2, 3)"),
        ("predict_proba", np.array([[np.nan, 0, 1], [0.2, 0.3, 0.5]]), "NaN in the output"),
        ("predict_proba", np.array([[1.5, -0.5, 0], [0.2, 0.3, 0.5]]), "outside [0, 1]"),
        ("predict_proba", np.array([[0.5, 0, 0], [0.2, 0.3, 0.5]]), "row 0's probabilities sum to 0.5"),
        ("predict_log_proba", np.array([[0.0, -np.inf, -np.inf], np.log([0.2, 0.3, 0.5])]), None),  # -inf: log 0
        ("predict_log_proba", np.array([[1.0, 0, 0], [0, 0, 0]]), "above 0"),
    ],
)
def test_the_model_check_refuses_outputs_no_method_could_give(method, output, problem):
    found = output_problem(method, output, 2, CLASSES)
    assert found == problem if problem is None else problem in found


def test_a_server_woken_during_a_registry_change_reads_again_until_it_is_over(registry):
    """A webhook for an alias write arrives while the change is under way (its intent still
    recorded): the alias reads as before it. The end of the change sends no webhook, so a
    server that only listens to webhooks reads again by itself until the change is over."""
    pending = {"on": True}

    def read(name, alias):
        return ("1", True) if pending["on"] else (registry.alias, False)

    registry.alias = "2"
    f = Follower(URI, lambda version: f"app of {version}", read=read, load=registry.load, poll_interval=0)
    f.start_serving()
    f.start()
    try:
        f.wake()  # the webhook: the change is still under way
        deadline = time.monotonic() + 10
        while f.last_check is None or f.last_check["trigger"] != "webhook":
            assert time.monotonic() < deadline, "the wake was not answered"
            time.sleep(0.02)
        assert f.current.version == "1"
        pending["on"] = False  # the change ends; no webhook comes
        while f.current.version != "2":
            assert time.monotonic() < deadline + 30, f.last_check
            time.sleep(0.02)
        assert f.last_check["trigger"] == "pending"
    finally:
        f.stop()


def test_a_failing_read_during_a_change_is_retried_at_a_pace_not_in_a_loop(registry):
    """A change was seen under way, then the store fails: the follower reads again every
    PENDING_RECHECK, not as fast as it can."""
    reads = []

    def read(name, alias):
        reads.append(1)
        if len(reads) == 1:
            return ("1", True)  # a change under way
        raise RuntimeError("database is locked")

    f = Follower(URI, lambda version: f"app of {version}", read=read, load=registry.load, poll_interval=10)
    f.start_serving()
    f.start()
    try:
        time.sleep(1.2)
    finally:
        f.stop()
    assert len(reads) <= 6, len(reads)  # about one read every half second at most, never a loop
    assert f.current.version == "1"
