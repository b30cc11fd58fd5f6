"""Orchestration: how the four steps in ``steps/`` are chained, cached and recorded."""
