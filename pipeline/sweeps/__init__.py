"""Sweeps (``-m``): one nested pipeline per combination (``sweep``), each job in a Hydra
launcher's worker (``job``), and the job the sweep gates (``winner``)."""
