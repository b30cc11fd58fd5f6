"""Step cache keys and lookups: what makes a hit, what makes a miss, and why."""

from __future__ import annotations

import shutil

import mlflow
import pytest

from core import contracts
from core.config import compose_config
from pipeline import cache, graph
from pipeline.processes.step import read_outputs, record_outputs

PACKAGES = {"mlflow": "3.17.2", "scikit-learn": "1.9.1"}
LOCK = "a" * 64  # the SHA-256 of requirements.lock
UPSTREAM = {"train": "t" * 64, "serialize": "s" * 64, "package_pyfunc": "p" * 64}


def key(step, cfg=None, params=None, packages=PACKAGES, upstream=UPSTREAM, data="d" * 64, lock=LOCK):
    cfg = cfg if cfg is not None else compose_config([])
    return cache.step_key(step, params or {}, cfg, upstream, packages, data if step == "train" else None, lock=lock)


def changed(a, b):
    return sorted(n for n in a.components if a.components[n] != b.components.get(n))


def test_keys_are_the_same_in_another_process():
    """No hash seed, dict order or object id in a key: a later run's process computes the same."""
    import subprocess
    import sys

    script = (
        "from tests.unit.test_cache import key; from pipeline import graph; "
        "print(' '.join(key(s).key for s in graph.NAMES))"
    )
    other = subprocess.run(
        [sys.executable, "-c", script],
        cwd=contracts.PROJECT_DIR,
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ, "PYTHONHASHSEED": "random"},
    )
    assert other.stdout.split() == [key(s).key for s in graph.NAMES]


def test_config_change_reaches_only_the_steps_that_read_it():
    other = compose_config(["model.C=0.5"])
    assert changed(key("train"), key("train", other)) == ["config"]
    for step in ("serialize", "package_pyfunc", "evaluate"):
        assert key(step).key == key(step, other).key
    atol = compose_config(["validation.atol=1e-8"])
    assert key("train").key == key("train", atol).key
    assert changed(key("evaluate"), key("evaluate", atol)) == ["config"]


def test_data_change_misses_train():
    assert changed(key("train"), key("train", data="e" * 64)) == ["data"]


def test_params_packages_and_inputs_are_in_the_key():
    assert changed(key("serialize", params={"model_uri": "a"}), key("serialize", params={"model_uri": "b"})) == [
        "params"
    ]
    assert changed(key("train"), key("train", packages={**PACKAGES, "mlflow": "3.18.0"})) == ["packages"]
    assert changed(key("serialize"), key("serialize", upstream={**UPSTREAM, "train": "x" * 64})) == ["inputs"]


def test_a_changed_lock_misses_every_step_with_the_same_package_versions():
    for step in graph.NAMES:
        assert changed(key(step), key(step, lock="b" * 64)) == ["lock"]


def test_a_changed_lock_is_a_cache_miss_that_names_it():
    """A run recorded under one lock is not reused under another; its tags keep the lock's digest."""
    finished = fake_step_run(key("train"))
    assert cache.lookup(key("train"), experiment_id(), forced=False).hit_run_id == finished
    assert mlflow.get_run(finished).data.tags[cache.COMPONENT_TAG_PREFIX + "lock"] == LOCK
    found = cache.lookup(key("train", lock="b" * 64), experiment_id(), forced=False)
    assert not found.hit
    assert found.reason == f"lock changed since run {finished}"


def test_the_pipeline_keys_on_the_lock_file(tmp_path, monkeypatch, cfg):
    """PipelineContext takes the digest of requirements.lock: editing the file changes every key."""
    from core import dependencies
    from pipeline import run

    lock = tmp_path / "requirements.lock"
    lock.write_text("six==1.17.0\n")
    monkeypatch.setattr(dependencies, "RUNTIME_LOCK", lock)
    before = run.PipelineContext.create(cfg, [], frozenset(), None, data_digest="d" * 64)
    lock.write_text("six==1.16.0\n")
    after = run.PipelineContext.create(cfg, [], frozenset(), None, data_digest="d" * 64)
    assert before.lock_sha256 != after.lock_sha256
    assert changed(key("evaluate", lock=before.lock_sha256), key("evaluate", lock=after.lock_sha256)) == ["lock"]


def project_copy(tmp_path):
    """The project's packages and MLproject, copied to be edited."""
    copy = tmp_path / "project"
    for package in contracts.PROJECT_DIR.glob("*/__init__.py"):
        shutil.copytree(package.parent, copy / package.parent.name)
    shutil.copy(contracts.PROJECT_DIR / "MLproject", copy / "MLproject")
    return copy


def test_code_change_misses_the_step_that_runs_it(tmp_path, monkeypatch):
    copy = project_copy(tmp_path)
    monkeypatch.setattr(cache, "CODE_ROOT", copy)
    before = {step: key(step) for step in graph.NAMES}
    with open(copy / "steps" / "serialize.py", "a") as handle:
        handle.write("\n# an uncommitted edit\n")
    after = {step: key(step) for step in graph.NAMES}
    assert changed(before["serialize"], after["serialize"]) == ["code"]
    assert before["train"].key == after["train"].key
    with open(copy / "MLproject", "a") as handle:  # a new entry point changes no step
        handle.write('\n  report:\n    command: "python -m report"\n')
    assert all(after[s].key == key(s).key for s in graph.NAMES)
    project = (copy / "MLproject").read_text()
    (copy / "MLproject").write_text(project.replace("steps.evaluate --", "steps.evaluate -v --"))
    assert changed(after["evaluate"], key("evaluate")) == ["code"]
    assert after["train"].key == key("train").key
    with open(copy / "core" / "contracts.py", "a") as handle:
        handle.write("\n# shared code changed\n")
    assert all(after[s].key != key(s).key for s in graph.NAMES)


def test_a_module_a_step_imports_indirectly_is_part_of_its_code(tmp_path, monkeypatch):
    """No list to keep: evaluate -> report -> a new helper module, imported inside a function."""
    copy = project_copy(tmp_path)
    monkeypatch.setattr(cache, "CODE_ROOT", copy)
    helper = copy / "core" / "plot_style.py"
    helper.write_text("DPI = 100\n")
    with open(copy / "core" / "report.py", "a") as handle:
        handle.write("\n\ndef _style():\n    from core import plot_style\n\n    return plot_style.DPI\n")
    assert "core/plot_style.py" in cache.step_code_files("evaluate")
    before = {step: key(step) for step in graph.NAMES}
    helper.write_text("DPI = 200\n")
    after = {step: key(step) for step in graph.NAMES}
    assert changed(before["evaluate"], after["evaluate"]) == ["code"]
    assert all(before[s].key == after[s].key for s in ("train", "serialize", "package_pyfunc"))


def test_relative_imports_and_config_targets_are_part_of_the_code(tmp_path, monkeypatch):
    copy = project_copy(tmp_path)
    monkeypatch.setattr(cache, "CODE_ROOT", copy)
    (copy / "steps" / "relative_helper.py").write_text("X = 1\n")
    with open(copy / "steps" / "serialize.py", "a") as handle:
        handle.write("\nfrom . import relative_helper  # noqa\n")
    assert "steps/relative_helper.py" in cache.step_code_files("serialize")
    # A project module named only by a config's _target_ (Hydra imports it at fit time).
    (copy / "steps" / "my_models.py").write_text("def build():\n    return None\n")
    cfg = compose_config(["model._target_=steps.my_models.build"])
    before = key("train", cfg)
    (copy / "steps" / "my_models.py").write_text("def build():\n    return 1\n")
    assert changed(before, key("train", cfg)) == ["code"]


def test_code_files_are_the_project_modules_a_step_imports():
    files = cache.step_code_files("serialize")
    # Its own module, what it imports directly and what those import, and nothing else.
    assert {"steps/serialize.py", "core/integrity.py", "model/dispatch_model.py", "pipeline/processes/step.py"} <= set(
        files
    )
    assert "core/report.py" not in files and "steps/train.py" not in files
    assert files == sorted(files) and all((contracts.PROJECT_DIR / f).is_file() for f in files)
    assert "core/report.py" in cache.step_code_files("evaluate")


@pytest.mark.parametrize(
    ("value", "expected"), [("", set()), ("all", set(graph.NAMES)), ("train, evaluate", {"train", "evaluate"})]
)
def test_parse_force(value, expected):
    assert cache.parse_force(value) == expected


def test_parse_force_rejects_unknown_steps():
    with pytest.raises(ValueError, match=r"unknown step\(s\) \['trian'\]"):
        cache.parse_force("trian")


def fake_step_run(step_key, status="FINISHED"):
    with mlflow.start_run() as run:
        mlflow.set_tag(contracts.STEP_TAG, step_key.step)
        record_outputs({"model_uri": f"runs:/{run.info.run_id}/model"})
    mlflow.MlflowClient().set_terminated(run.info.run_id, status)
    if status == "FINISHED":
        cache.record(run.info.run_id, step_key)
    else:  # a failed run that somehow carries a key must still not be a hit
        mlflow.MlflowClient().set_tag(run.info.run_id, cache.CACHE_KEY_TAG, step_key.key)
    return run.info.run_id


def experiment_id():
    return mlflow.get_experiment_by_name("tests").experiment_id


def test_lookup_hit_miss_failed_and_forced():
    train_key = key("train")
    found = cache.lookup(train_key, experiment_id(), forced=False)
    assert not found.hit and found.reason == "no earlier finished train run"

    failed = fake_step_run(train_key, status="FAILED")
    assert not cache.lookup(train_key, experiment_id(), forced=False).hit

    finished = fake_step_run(train_key)
    found = cache.lookup(train_key, experiment_id(), forced=False)
    assert found.hit_run_id == finished != failed
    # The hit's outputs, read from the search that found it, as the step published them.
    assert found.outputs == read_outputs(finished) == {"model_uri": f"runs:/{finished}/model"}

    assert cache.lookup(train_key, experiment_id(), forced=True).reason == "forced"

    new_data = key("train", data="e" * 64)
    found = cache.lookup(new_data, experiment_id(), forced=False)
    assert not found.hit
    assert found.reason == f"data changed since run {finished}"


def test_lookup_misses_when_the_cached_version_is_gone():
    package_key = key("package_pyfunc")
    run_id = fake_step_run(package_key)
    mlflow.MlflowClient().set_tag(run_id, contracts.OUTPUT_TAG_PREFIX + "registered_model_uri", "models:/gone/1")
    found = cache.lookup(package_key, experiment_id(), forced=False)
    assert not found.hit and "models:/gone/1" in found.reason
