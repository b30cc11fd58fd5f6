"""The one exception a step explains in one line, and what an error message may keep
once it is stored (a tag, a description, a logged reason) or sent to a client."""

from __future__ import annotations

import re

MAX_STORED_CHARS = 1000  # an error message kept on a run or a registered version

# MLflow quotes the whole input in two of its messages: ``Failed to predict data '<rows>'.
# \nError: ...`` and ``Failed to enforce schema of data '<rows>' with schema '[...]'. Error: ...``.
PREDICT_ECHO = re.compile(r"\AFailed to predict data '.*\. \nError: ", re.DOTALL)
SCHEMA_ECHO = re.compile(
    r"Failed to enforce schema of data .*? with schema '(?P<schema>\[.*?\])'\. Error: "
    r"(?P<error>.*)\Z",
    re.DOTALL,
)


class StepError(Exception):
    """A refusal a step explains in one line: bad data, a bad parameter, a refused
    artifact, a failed validation. Anything else is a bug and keeps its traceback."""


def without_data(message: str) -> str:
    """``message`` without the rows MLflow quotes in it: its ``Failed to predict data '<rows>'``
    prefix dropped, and a schema error said error first (it names the column), then the
    schema (64 columns of it fill any cut), without the ``of data '<rows>'``."""
    message = PREDICT_ECHO.sub("", message, count=1)
    return SCHEMA_ECHO.sub(
        r"The input does not match the model's schema: \g<error> Its schema: \g<schema>", message, count=1
    )


def stored(message: str, limit: int = MAX_STORED_CHARS) -> str:
    """``message`` as it may be stored in the tracking store: :func:`without_data`, secrets
    masked (``core.secrets``), on one line (a table's repr spans many), and cut to ``limit``
    characters saying how much was cut."""
    from core.secrets import redact

    message = " ".join(redact(without_data(message)).split())
    if len(message) <= limit:
        return message
    return f"{message[:limit]}... ({len(message) - limit} more characters not stored)"
