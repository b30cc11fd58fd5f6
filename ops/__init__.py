"""Operator commands around the pipeline: scheduled retraining, rollback and promotion
by hand, reproduction of a registered version, and generating a new data batch."""
