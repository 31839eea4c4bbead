"""The one composition path: Hydra overrides -> a validated :class:`RunConfig` and the resolved
dict a record stores. The CLI, the bench, packed trials, the sweep driver and the tests all
compose through :func:`compose`, so a config means the same wherever it is built.

A leaf module: it imports only the schema and its validation (Hydra itself is imported when composing).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Literal, overload

from .paths import CONF_DIR
from .schema import ConfigError, register_configs
from .schema_rules import closed_set_error
from .validation import resolved_config, unknown_key_error_at, validate

if TYPE_CHECKING:
    from collections.abc import Iterable

    from omegaconf import DictConfig

    from .schema import RunConfig

# Hydra keeps its state in a process-wide singleton: one composition at a time (the sweep driver
# composes from several worker threads).
_LOCK = threading.Lock()


@overload
def compose(overrides: Iterable[str], *, hydra: Literal[False] = False) -> tuple[RunConfig, dict]: ...
@overload
def compose(overrides: Iterable[str], *, hydra: Literal[True]) -> tuple[RunConfig, dict, DictConfig]: ...


def compose(overrides, *, hydra=False):
    """Compose ``conf/config.yaml`` with ``overrides`` and validate it, as ``python -m harness.run``
    does: returns ``(run, resolved)``, and with ``hydra=True`` also the composed ``hydra`` node
    (run and sweep dirs). Any error, in composition or validation, is one :class:`ConfigError`
    line naming the key or option."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register_configs()
    try:
        with _LOCK:
            GlobalHydra.instance().clear()  # composable from anywhere, even where Hydra was left initialized
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=hydra)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(compose_error_line(exc)) from None
    run = validate(cfg)
    resolved = resolved_config(cfg, run)
    return (run, resolved, cfg.hydra) if hydra else (run, resolved)


def compose_error_line(exc: Exception) -> str:
    """One line from Hydra's multi-line composition errors, keeping the key and the options."""
    from hydra.errors import MissingConfigException
    from hydra.errors import OverrideParseException as OverrideParseError
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    if isinstance(exc, MissingConfigException) and exc.options:
        options = sorted(o for o in exc.options if not o.endswith("_schema"))
        return f"{exc.missing_cfg_file}: no such option; available: {', '.join(options)}"
    line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if line.startswith("Ambiguous value"):  # a comma in a value: Hydra's own hint lists the quoting
        return "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    if isinstance(exc, OverrideParseError) and "=" in str(exc.override):
        key, value = exc.override.split("=", 1)
        return (f"{exc.override}: Hydra's override grammar cannot read this value ({line}); if it is a plain string "
                f"(a path), quote it inside the argument: \"{key}={quote_override(value)}\" in the shell")
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        key = getattr(cause, "full_key", None)
        if key and isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
            unknown = unknown_key_error_at(key, getattr(cause, "object_type", None))  # a key the schema lacks: say so, with the key probably meant
            if unknown is not None:
                return str(unknown)
        closed = closed_set_error(cause)  # a value outside a closed set: worded as the schema's checks word it
        if closed is not None:
            return str(closed)
        if key:  # the first cause that names the key says what was wrong with it
            return f"{line} - {key}: {str(cause).splitlines()[0]}"
        cause = cause.__cause__ or cause.__context__
    return line


def is_hydra_override(arg: str) -> bool:
    """An override of Hydra's own settings (``hydra.run.dir=...``, ``hydra/launcher=...``)."""
    return arg.lstrip("+~").startswith(("hydra.", "hydra/"))


def quote_override(value: str) -> str:
    """A value as Hydra's override grammar reads it back unchanged."""
    import re

    if re.fullmatch(r"[\w./:-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
