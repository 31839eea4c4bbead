"""The checks every schema's ``__post_init__`` runs, one line each: a condition on a key, a value
from a closed set, a seed numpy takes. Each raises :class:`~harness.errors.ConfigError` naming the
key. A leaf under the schemas (:mod:`harness.schema`, :mod:`harness.trainer_schema`,
:mod:`harness.sweep_schema`).

Closed sets are :class:`Choice` enums: OmegaConf refuses a value outside one as the config
composes (:func:`closed_set_error` words its error as the checks here do), and :func:`choice` turns
the member back into its plain string in the validated dataclass.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
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


class Choice(str, Enum):
    """A closed set of strings. A schema field of such a type is validated by OmegaConf as the
    config composes (a value outside the set fails there, naming the key and the set); the value
    is given as the member's name, which is its string. Members print as their value."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


def closed_set(name: str, values: Iterable[str], module: str) -> type[Choice]:
    """The :class:`Choice` ``name`` of ``values`` (defined in ``module``), each member named by its
    value: ``Precision["bf16-true"]``, as OmegaConf looks members up."""
    return Choice(name, [(value, value) for value in values], module=module)


def choice(value: Any, key: str, choices: type[Choice]) -> str:
    """``value`` (a member of ``choices``, or a string when the dataclass is built in code) as its
    plain string, or the error line naming ``key`` and the set. A validated schema holds the plain
    string, so records, checkpoints and caches keep the strings they always held."""
    value = value.value if isinstance(value, Enum) else value
    one_of(value, key, tuple(c.value for c in choices))
    return value


def closed_set_error(exc: BaseException) -> ConfigError | None:
    """The one line for a value OmegaConf refused in a :class:`Choice` field while composing,
    worded as :func:`choice` words it (``trainer.precision: got 'bf17', expected one of auto,
    ...``); None for any other error."""
    from omegaconf.errors import ValidationError

    choices = getattr(getattr(exc, "child_node", None), "enum_type", None)
    if not (isinstance(exc, ValidationError) and exc.full_key and isinstance(choices, type)
            and issubclass(choices, Choice)):
        return None
    return ConfigError(f"{exc.full_key}: got {str(exc.value)!r}, expected one of {', '.join(c.value for c in choices)}")
