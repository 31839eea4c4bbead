"""Test helpers: composed runs and a subprocess runner for the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from harness.paths import CONF_DIR, REPO_ROOT
from harness.schema import RunConfig, register_configs, validate

TINY_FAST = ["model=tiny", "trainer=smoke", "data.train_size=16", "data.val_size=4", "data.test_size=4",
             "data.max_seq_len=128", "logger=none"]


def compose_run(overrides: list[str]) -> RunConfig:
    """A validated RunConfig from Hydra overrides, exactly as the CLI composes it."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return validate(compose("config", overrides=overrides))


def run_cli(args: list[str], run_dir: Path | None = None, timeout: int = 600,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m harness.run`` as a user would; ``run_dir`` sets hydra.run.dir; ``env``
    adds environment variables."""
    cmd = [sys.executable, "-m", "harness.run", *args]
    if run_dir is not None:
        cmd.append(f"hydra.run.dir={run_dir}")
    env = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def read_record(run_dir: Path) -> dict:
    return json.loads((run_dir / "record.json").read_text())
