"""Test helpers: the tiny run's overrides, composed runs (in process and through the CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness.compose import compose
from harness.paths import REPO_ROOT
from harness.schema import RunConfig


def tiny(chat_file: Path, *extra: str, size: int = 32, base: Path | None = None) -> list[str]:
    """Hydra overrides for a tiny run: the tiny random Llama on ``chat_file`` with ``size`` training
    examples (a quarter as many for validation and for test), 128-token sequences, the smoke
    trainer (3 steps), no logger, no scoring; ``extra`` overrides come last and win. ``base``: an
    HF folder (the ``tiny_pretrained`` fixture) loaded as pretrained weights instead.

    HARNESS_TEST_TOKENIZER names a tokenizer folder for machines without the embedded package
    (a lent GPU)."""
    tokenizer = os.environ.get("HARNESS_TEST_TOKENIZER")
    model = (["model=hf", f"model.name_or_path={base}"] if base is not None
             else ["model=tiny", *([f"model.tokenizer={tokenizer}"] if tokenizer else [])])
    return [*model, "data=sharegpt_file", f"data.path={chat_file}", f"data.train_size={size}",
            f"data.val_size={size // 4}", f"data.test_size={size // 4}", "data.max_seq_len=128", "trainer=smoke",
            "logger=none", "eval=none", *extra]


def compose_run(overrides: list[str]) -> RunConfig:
    """A validated RunConfig from Hydra overrides, exactly as the CLI composes it."""
    return compose(overrides)[0]


def train_in_process(overrides: list[str], run_dir: Path) -> dict:
    """One run in this process, composed and recorded as the CLI does it; returns its record."""
    from harness.train import run_training

    return run_training(*compose(overrides), run_dir)


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


def ran_side_by_side(run_dirs: list[Path]) -> bool:
    """Whether two runs' processes overlapped: each had started (Hydra wrote its config) before
    the other's record was written at its end."""
    started = [(d / ".hydra" / "config.yaml").stat().st_mtime for d in run_dirs]
    ended = [(d / "record.json").stat().st_mtime for d in run_dirs]
    return started[0] < ended[1] and started[1] < ended[0]
