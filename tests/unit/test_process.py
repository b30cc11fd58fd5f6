"""How a pipeline process loads: the collector paused during its imports, then what was
loaded frozen out of its sight (pipeline/processes/loading.py)."""

from __future__ import annotations

import gc

import pytest

from pipeline.processes import loading as process
from pipeline.processes.loading import loading


@pytest.fixture
def unfrozen(monkeypatch):
    """As in a process run by run_as_process; the test session's objects are not frozen
    before or after (the test freezes its own)."""
    monkeypatch.setattr(process, "_whole_process", True)
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.enable()


def test_loading_pauses_the_collector_then_freezes_what_was_loaded(unfrozen):
    assert gc.isenabled() and gc.get_freeze_count() == 0
    with loading():
        assert not gc.isenabled()
        loaded = [[index] for index in range(50_000)]  # lists: objects the collector tracks
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(loaded)


def test_loading_ends_the_same_way_on_an_error_and_keeps_a_paused_collector_paused(unfrozen):
    with pytest.raises(SystemExit), loading():
        raise SystemExit(2)  # a parser's exit while loading
    assert gc.isenabled() and gc.get_freeze_count() > 0
    gc.disable()
    with loading():
        pass
    assert not gc.isenabled()


def test_loading_freezes_nothing_in_a_process_that_is_not_the_pipelines_own():
    """A test calling a main function in its own process: the collector is paused while
    it loads, and nothing of the test session is frozen."""
    frozen = gc.get_freeze_count()
    with loading():
        assert not gc.isenabled()
    assert gc.isenabled() and gc.get_freeze_count() == frozen
