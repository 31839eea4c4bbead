"""Imported only by the fork server that runs start from (the last of
:data:`sweeps.launch.PRELOAD`): it ignores SIGTERM, as it already ignores SIGINT, and it exits
at once when it ends.

A SIGTERM to the driver's process group (a preempted job, ``kill -TERM -PGID``) reaches the
server too; were it to die of it, its runs would die with it (``PR_SET_PDEATHSIG``) before
recording ``interrupted``. The server exits when the driver does, and each run restores the
default in :func:`sweeps.launch.run_module_here`.

When the driver dies the server ends, and its runs die with it: the sooner, the less a dead
driver's run writes into a sweep that has moved on. An interpreter that imported torch,
transformers and Lightning takes about a second to tear down; the server has nothing to save,
so it skips that (``os._exit``).
"""

import atexit
import os
import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)

if os.environ.get("HARNESS_FORK_SERVER") == "1":  # sweeps.launch.SERVER_ENV: the server, not a run
    _SERVER_PID = os.getpid()

    def _exit_at_once() -> None:
        if os.getpid() == _SERVER_PID:  # runs forked from the server leave by their own exit
            os._exit(0)

    atexit.register(_exit_at_once)
