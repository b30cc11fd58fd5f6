"""Operator commands around the pipeline: scheduled retraining, rollback,
reproduction of a registered version, and generating a new data batch."""
