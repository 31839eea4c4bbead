"""The errors a user can fix: a config value, a data file, a path (missing, or a folder that
cannot be written), a model or the hub, an eval task. Entry points print one of these as one
line and exit with code 2 (:func:`fail`, :func:`exit_on_user_error`); a run never turns one
into a record.

The classes are defined here, a leaf module that imports nothing of the harness, so any module
(and the sweep driver, without Lightning) can raise or catch them; the modules that raise them
import them from here.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn


class ConfigError(ValueError):
    """A user error in the config: reported as one line naming the key, no traceback."""


class DataError(ValueError):
    """A user error in the data or data config, reported as one line naming the file and line."""


class MissingPathError(FileNotFoundError):
    """A user-named path (file, folder, package file) that does not exist."""


class UnusablePathError(Exception):
    """A folder the harness must write (a run dir, a sweep dir, a storage file's folder) that
    is a file, lies under a file, cannot be written or sits on a full disk: one line, exit 2."""


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded (no network, missing folder, gated repo...)."""


class EvalError(ValueError):
    """A scoring request that cannot run here (unknown task, hub task without network)."""


class RecordError(ValueError):
    """A record.json that is not a run record: truncated, not a JSON object, or without a status."""


USER_ERRORS = (ConfigError, DataError, MissingPathError, UnusablePathError, ModelLoadError, EvalError, RecordError)


def fail(message: str) -> NoReturn:
    """End on a user error: one ``error: MESSAGE`` line on stderr, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """A user error (:data:`USER_ERRORS`) raised inside ends the process through :func:`fail`."""
    try:
        yield
    except USER_ERRORS as exc:
        fail(str(exc))
