"""Secrets in the environment are never recorded: not on runs, versions or artifacts, not in logs.

Credentials reach MLflow's client only through its own variables (``MLFLOW_TRACKING_USERNAME``
with ``MLFLOW_TRACKING_PASSWORD``, or ``MLFLOW_TRACKING_TOKEN``), which it reads itself; no
code here reads them. The project records no environment variable wholesale: a step gets the
driver's environment from ``mlflow run`` or, forked, over the step server's socket
(``pipeline.processes.launch``), and neither is logged. What it does record may still carry a
variable's value: the resolved config (``${oc.env:...}``), the overrides a person typed, an
error message. So, by rule, every such text goes through :func:`redact` before it is stored
(``pipeline.processes.step.log_config``, ``pipeline.lineage.tag_lineage``,
``core.errors.stored``, run names: ``pipeline.summary.named``), and every log record through
:class:`RedactingFilter` (``core.contracts.configure_logging``): the value of each variable named
as a secret (:data:`SECRET_NAME`) becomes :data:`MASK`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

# Variables whose value is a secret: MLflow's credentials, the admin password of its auth app,
# a webhook secret, and anything else so named (AWS_SECRET_ACCESS_KEY, GITHUB_TOKEN, ...).
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|TOKEN|SECRET|SECRET_KEY|SECRET_ACCESS_KEY|API_KEY|ACCESS_KEY)$", re.I)
MIN_SECRET_CHARS = 6  # shorter values (a flag's "1", "true") would mask ordinary text
MASK = "***"


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of the secret variables in ``environ`` (this process's by default), the
    longest first (a secret containing another is masked whole)."""
    environ = os.environ if environ is None else environ
    values = {value for name, value in environ.items() if SECRET_NAME.search(name) and len(value) >= MIN_SECRET_CHARS}
    return sorted(values, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with every secret variable's value (:func:`secret_values`) replaced by :data:`MASK`."""
    for value in secret_values(environ):
        text = text.replace(value, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in each record's message (its arguments merged in)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
