"""A Hydra sweeper for the pipeline's sweeps; Hydra finds it under ``hydra_plugins``."""
