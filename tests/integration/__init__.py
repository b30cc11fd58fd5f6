"""Integration: steps and operator commands against a real (temporary) MLflow store and registry, in process."""
