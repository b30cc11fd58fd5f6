"""Consumers of a registered model: batch scoring of files (``batch``), the same
on Spark (``spark``) and the REST scoring server (``server``)."""
