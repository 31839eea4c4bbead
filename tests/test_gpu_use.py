"""The sweep driver's GPU sampler (sweeps.gpu_use): nvidia-smi beside the driver for as long as
the workers run, its samples in the sweep dir, and nothing where the host has none."""

from __future__ import annotations

import os
import stat
import time

from sweeps import gpu_use


def fake_nvidia_smi(bin_dir, args_file):
    """An ``nvidia-smi`` that records its arguments and writes a header and a sample every 0.05 s
    until stopped, as ``nvidia-smi --format=csv,nounits -l N`` does (this machine has none)."""
    script = bin_dir / "nvidia-smi"
    script.write_text(f"""#!/bin/sh
echo "$@" > {args_file}
echo "timestamp, index, utilization.gpu [%], memory.used [MiB], memory.total [MiB]"
while true; do echo "2026/12/08 01:00:00.000, 0, 42, 1024, 81559"; sleep 0.05; done
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_the_sampler_runs_while_the_workers_do_and_stops_with_them(tmp_path, monkeypatch):
    bin_dir, sweep_dir = tmp_path / "bin", tmp_path / "sweep"
    bin_dir.mkdir(), sweep_dir.mkdir()
    fake_nvidia_smi(bin_dir, tmp_path / "args")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with gpu_use.sampling(sweep_dir) as path:
        time.sleep(0.5)
    assert path is not None and path.parent == sweep_dir and path.name.startswith("gpu_use.")
    args = (tmp_path / "args").read_text().split()
    assert f"--query-gpu={gpu_use.GPU_USE_FIELDS}" in args and args[-2:] == ["-l", str(gpu_use.SAMPLE_SECONDS)]
    lines = path.read_text().splitlines()
    assert lines[0].startswith("timestamp, index, utilization.gpu") and len(lines) >= 3
    time.sleep(0.3)  # stopped with the block: the file grows no more
    assert len(path.read_text().splitlines()) == len(lines)


def test_no_sampler_without_nvidia_smi_or_when_trials_run_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with gpu_use.sampling(tmp_path) as path:
        assert path is None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_nvidia_smi(bin_dir, tmp_path / "args")
    monkeypatch.setenv("PATH", str(bin_dir))
    with gpu_use.sampling(tmp_path, enabled=False) as path:  # submitit: the trials' GPUs are on other hosts
        assert path is None
    assert not list(tmp_path.glob("gpu_use.*")) and not (tmp_path / "args").exists()
