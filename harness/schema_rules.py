"""The checks every schema's ``__post_init__`` runs, one line each: a condition on a key, a value
from a closed set, a seed numpy takes. Each raises :class:`~harness.errors.ConfigError` naming the
key. A leaf under the schemas (:mod:`harness.schema`, :mod:`harness.trainer_schema`,
:mod:`harness.sweep_schema`).
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError


def require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def one_of(value: Any, key: str, allowed: tuple) -> None:
    require(value in allowed, key, f"got {value!r}, expected one of {', '.join(map(str, allowed))}")


SEED_MAX = 2**32 - 1  # numpy's RandomState takes seeds in [0, 2**32 - 1]


def check_seed(value: Any, key: str) -> None:
    require(0 <= value <= SEED_MAX, key, f"must be in [0, {SEED_MAX}] (numpy's seed range), got {value}")
