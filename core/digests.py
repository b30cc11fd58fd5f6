"""Content digests: one place for how the project fingerprints values and files."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path

from core.contracts import PROJECT_DIR


def json_digest(value) -> str:
    """SHA-256 of ``value`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def files_digest(
    paths: Iterable[str | Path], root: Path = PROJECT_DIR, read: Callable[[Path], bytes] = Path.read_bytes
) -> str:
    """SHA-256 over the names and bytes of ``paths`` (relative to ``root``), as they are on disk
    (or as ``read`` gives them).

    Reading the files rather than asking git means uncommitted edits count.
    """
    digest = hashlib.sha256()
    for path in sorted(str(p) for p in paths):
        digest.update(path.encode() + b"\0")
        digest.update(read(root / path))
        digest.update(b"\0")
    return digest.hexdigest()
