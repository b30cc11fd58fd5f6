"""How the pipeline's processes run: a step's arguments, run, liveness and outputs
(``step``), its start here or forked from the step server (``launch``, ``step_server``),
and a process's loading (``loading``)."""
