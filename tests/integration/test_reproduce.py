"""`make reproduce` names the dependency lock that built a version, against the checkout's."""

from __future__ import annotations

from mlflow import MlflowClient

from core.dependencies import lock_sha256
from ops import reproduce
from pipeline.lineage import LOCK_TAG

NAME = "iris-classifier"
OTHER = "b" * 64


def test_describe_lock_same_other_and_unrecorded():
    current = "a" * 64
    assert reproduce.describe_lock("3", current, "c0ffee", current) == (
        f"lock: version 3 was built with requirements.lock sha256 {current}, the checkout's"
    )
    other = reproduce.describe_lock("3", OTHER, "c0ffee", current)
    assert other.startswith(
        f"lock: version 3 was built with requirements.lock sha256 {OTHER} (git show c0ffee:requirements.lock); "
    )
    assert f"the checkout's requirements.lock is sha256 {current}" in other
    assert reproduce.describe_lock("3", None, None, current) == (
        f"lock: version 3 records no requirements.lock digest; the checkout's requirements.lock is sha256 {current}"
    )


def test_reproduce_names_the_lock_that_built_the_version(champion, capsys):
    tags = MlflowClient().get_model_version(NAME, "1").tags
    assert tags[LOCK_TAG] == lock_sha256()
    reproduce.main(["1"])
    out = capsys.readouterr().out
    assert f"lock: version 1 was built with requirements.lock sha256 {lock_sha256()}, the checkout's" in out
    assert f"{NAME} version 1 reproduced" in out


def test_reproduce_names_another_lock_and_where_to_find_it(champion, capsys):
    client = MlflowClient()
    client.set_model_version_tag(NAME, "1", LOCK_TAG, OTHER)
    commit = client.get_model_version(NAME, "1").tags["lineage.git_commit"]
    assert reproduce.lock_statement(NAME, "1").startswith(
        f"lock: version 1 was built with requirements.lock sha256 {OTHER} (git show {commit}:requirements.lock); "
        f"the checkout's requirements.lock is sha256 {lock_sha256()}"
    )
    # A version without the tag: its train run's cache record says which lock it was.
    client.delete_model_version_tag(NAME, "1", LOCK_TAG)
    assert reproduce.lock_statement(NAME, "1").startswith(
        f"lock: version 1 was built with requirements.lock sha256 {lock_sha256()}, the checkout's"
    )
