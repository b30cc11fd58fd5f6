"""A module for ``pipeline.processes.launch`` tests to run: prints what it was given, then does
what its first argument says (``exit N``, ``wait FILE``: write FILE on SIGTERM and exit 7,
``die``: kill itself with SIGKILL)."""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time

if __name__ == "__main__":
    print(
        json.dumps(
            {
                "argv": sys.argv[1:],
                "cwd": os.getcwd(),
                "pid": os.getpid(),
                "ppid": os.getppid(),
                "probe": os.environ.get("PROBE"),
                "driver": os.environ.get("PIPELINE_DRIVER"),
                "name": __name__,
                "frozen": gc.get_freeze_count(),
                "collecting": gc.isenabled(),
            }
        ),
        flush=True,
    )
    print("on stderr", file=sys.stderr, flush=True)
    action, argument = sys.argv[1], sys.argv[2]
    if action == "exit":
        sys.exit(int(argument))
    if action == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "wait":

        def stopped(signum, _frame):
            with open(argument, "w") as out:
                out.write(signal.Signals(signum).name)
            os._exit(7)

        signal.signal(signal.SIGTERM, stopped)
        print("waiting", flush=True)
        time.sleep(120)
        sys.exit(3)
