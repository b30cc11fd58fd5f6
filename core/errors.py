"""The one exception a step explains in one line."""


class StepError(Exception):
    """A refusal a step explains in one line: bad data, a bad parameter, a refused
    artifact, a failed validation. Anything else is a bug and keeps its traceback."""
