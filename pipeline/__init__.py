"""Orchestration: the step graph (``graph``), the driver (``main``, ``run``), sweeps
(``sweep``), the step cache (``cache``), lineage, locks, and how a step process runs
and hands on its outputs (``step``). Imports ``core``; never imports ``steps``."""
