"""A forked child of a run (lm-eval's pool worker) ends on SIGTERM as usual, not with the run's
own stop handling, which left lm-eval's Pool.terminate() waiting on it."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import multiprocessing, os, signal, time
from harness.signals import STOP
STOP.install()
child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
child.start()
time.sleep(0.5)
os.kill(child.pid, signal.SIGTERM)
child.join(10)
print(child.exitcode)
"""


def test_a_forked_child_ends_on_sigterm():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "-15", out.stderr[-2000:]
