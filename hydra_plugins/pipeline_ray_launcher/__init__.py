"""A Hydra launcher that runs the sweep's jobs on a Ray cluster; Hydra finds it under ``hydra_plugins``."""
