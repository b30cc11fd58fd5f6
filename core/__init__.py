"""Library code shared by the steps, the driver and the consumers. Opens no MLflow runs.

``contracts`` (names, tags, the tracking store), ``config`` (composing ``conf/``),
``data`` (sources and their checks), ``tabular`` (reading and writing CSV/Parquet),
``validation`` (the pyfunc against its estimator), ``metrics`` (holdout metrics),
``gate`` (the champion/challenger decision), ``registry`` (reading aliases, failing
closed; moving them), ``report`` (the evaluation report), ``digests``, ``errors``.
"""
