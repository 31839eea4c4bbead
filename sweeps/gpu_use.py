"""The GPUs' use over a sweep: ``nvidia-smi`` samples every GPU beside the driver, into
``gpu_use.<epoch>.csv`` in the sweep dir (one file per driver run, so a resumed sweep adds one),
which ``python -m harness.report.throughput`` reads against the sweep's busy time (issue 18: the
GPU's utilisation over a sweep, stated beside its runs per hour).

``utilization.gpu`` is nvidia-smi's share of the sample period in which any kernel ran, not how
full the GPU was: a small model's kernels can keep it at 100% with most of the chip idle.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

GPU_USE_FIELDS = "timestamp,index,utilization.gpu,memory.used,memory.total"
SAMPLE_SECONDS = 5


@contextlib.contextmanager
def sampling(sweep_dir: Path, enabled: bool = True) -> Iterator[Path | None]:
    """Sample the GPUs' use into ``sweep_dir`` while the block runs: the file's path, or None
    where not ``enabled`` (a launcher whose trials run on other hosts) or this host has no
    ``nvidia-smi``. A sampler that cannot start costs a warning, never the sweep."""
    exe = shutil.which("nvidia-smi")
    if not enabled or exe is None:
        yield None
        return
    path = sweep_dir / f"gpu_use.{int(time.time())}.csv"
    with path.open("w", encoding="utf-8") as out:
        try:
            sampler = subprocess.Popen([exe, f"--query-gpu={GPU_USE_FIELDS}", "--format=csv,nounits",
                                        "-l", str(SAMPLE_SECONDS)], stdout=out, stderr=subprocess.DEVNULL)
        except OSError as exc:
            log.warning("could not sample the GPUs' use with %s: %s", exe, exc)
            yield None
            return
        try:
            yield path
        finally:
            sampler.terminate()
            try:
                sampler.wait(timeout=5)
            except subprocess.TimeoutExpired:
                sampler.kill()
