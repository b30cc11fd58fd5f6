"""``python -m tests.support.spark_tampered MARKER <serving.spark arguments>``: the
``serving.spark`` command, but the copy of the model its driver ships to the executors is
changed after the driver verified it: a line appended to the model's code, which would
create the file MARKER if it ever ran. The executors must refuse that copy."""

from __future__ import annotations

import sys
from pathlib import Path

from serving import spark, spark_executor


def main(marker: str, argv: list[str]) -> None:
    pack = spark_executor.pack_model

    def tampered(local: Path, archive: Path) -> Path:
        with open(local / "dispatch_model.py", "a") as code:
            code.write(f"\nopen({marker!r}, 'w').close()\n")
        return pack(local, archive)

    spark_executor.pack_model = tampered
    spark.main(argv)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
