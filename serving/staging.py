"""Where batch scoring (serving/batch.py) writes its output until it is complete, and
how it stops on SIGTERM.

:func:`staged_output` makes a folder beside the output (``.<name>.<random>``, by
``tempfile.mkdtemp``: a new name, created exclusively, mode 0700), so no file or
link planted beside the output, under any name, is ever written through; the
finished file is moved over the output with ``os.replace``; the folder is removed
however the block ends. :class:`Terminated` is SIGTERM raised as an exception, as
Ctrl-C raises KeyboardInterrupt, so that those removals run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from core.tabular import TableError

log = logging.getLogger(__name__)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread (as Ctrl-C raises KeyboardInterrupt) so that
    ``with`` and ``finally`` blocks remove what scoring had begun to write."""


def terminate(signum, frame):
    """A SIGTERM handler: raise :class:`Terminated`."""
    raise Terminated(signum)


@contextlib.contextmanager
def staged_output(output_path: Path, role: str = "Output file") -> Iterator[Path]:
    """A path to write ``output_path``'s content to, inside a folder made for it beside
    ``output_path`` (``tempfile.mkdtemp``: a new random name, created exclusively, mode
    0700, so no file or link planted there can be written through); moved over
    ``output_path`` (``os.replace``) when the block ends without an error. The folder is
    removed however the block ends."""
    if output_path.is_dir():
        raise TableError(f"{role} {output_path} is a directory; name a file in it")
    folder = output_path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TableError(f"{role} {output_path}: its directory cannot be made: {err}") from err
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{output_path.name}.", dir=folder))
    except OSError as err:
        raise TableError(
            f"{role} {output_path}: its folder {folder} cannot be written: {err.strerror or err}"
        ) from None
    try:
        yield stage / output_path.name
        if (stage / output_path.name).exists():
            try:
                os.replace(stage / output_path.name, output_path)
            except OSError as err:
                raise TableError(f"{role} {output_path} cannot be written: {err}") from err
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if stage.exists():  # an error was raised; this only reports what is left
            log.warning("could not remove the temporary folder %s", stage)
