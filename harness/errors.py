"""The errors a user can fix: a config value, a data file, a path (missing, or a folder that
cannot be written), a model or the hub, an eval task. Entry points print one of these as one
line and exit with code 2; a run never turns one into a record.

Kept apart from ``harness.train`` so the sweep driver can catch them without importing Lightning.
"""

from __future__ import annotations

from .data import DataError
from .evaluate import EvalError
from .models import ModelLoadError
from .paths import MissingPathError, UnusablePathError
from .results import RecordError
from .schema import ConfigError

USER_ERRORS = (ConfigError, DataError, MissingPathError, UnusablePathError, ModelLoadError, EvalError, RecordError)
