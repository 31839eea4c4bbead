"""Imported only by the fork server that runs start from (the last of
:data:`sweeps.launch.PRELOAD`): it ignores SIGTERM, as it already ignores SIGINT.

A SIGTERM to the driver's process group (a preempted job, ``kill -TERM -PGID``) reaches the
server too; were it to die of it, its runs would die with it (``PR_SET_PDEATHSIG``) before
recording ``interrupted``. The server exits when the driver does, and each run restores the
default in :func:`sweeps.launch.run_module_here`.
"""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
