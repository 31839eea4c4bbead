"""A run from a `git archive` copy of the harness (no .git, as on a lent GPU) records its commit."""

from __future__ import annotations

import subprocess
import sys
import tarfile

from harness.paths import REPO_ROOT


def test_a_git_archive_copy_knows_its_commit(tmp_path):
    head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    archive = tmp_path / "src.tar"
    subprocess.run(["git", "-C", str(REPO_ROOT), "archive", "-o", str(archive), "HEAD", "harness"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "src", filter="data")
    got = subprocess.run([sys.executable, "-c", "from harness.record import git_sha; print(git_sha())"],
                         cwd=tmp_path / "src", capture_output=True, text=True, check=True).stdout.strip()
    assert got == f"{head}-archive"
