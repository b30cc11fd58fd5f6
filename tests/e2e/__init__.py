"""End to end: through `mlflow run`, the driver process, a scoring server, Spark, or a shared tracking server."""
