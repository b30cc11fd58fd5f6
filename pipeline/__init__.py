"""Orchestration. The run: the step graph (``graph``), the driver (``main``, ``run``), the
step cache (``cache``), what the MLflow UI shows of a run (``record``, ``summary``,
``unchanged``) and lineage. Sweeps (``sweeps``). How a step's process starts, checks its
pipeline and hands on its outputs (``processes``). Imports ``core``; never imports ``steps``."""
