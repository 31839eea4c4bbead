"""The errors a user can fix: a config value, a data file, a path (missing, or a folder that
cannot be written), a model or the hub, an eval task. Entry points print one of these as one
line and exit with code 2 (:func:`fail`, :func:`exit_on_user_error`); a run never turns one
into a record.

Kept apart from ``harness.train`` so the sweep driver can catch them without importing Lightning.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from .data import DataError
from .evaluate import EvalError
from .models import ModelLoadError
from .paths import MissingPathError, UnusablePathError
from .results import RecordError
from .schema import ConfigError

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
