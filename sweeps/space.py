"""Search spaces: the ``sweep.space`` spec -> Optuna distributions -> trial overrides."""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from harness.schema import ConfigError

CATEGORICAL_TYPES = (str, int, float, bool, type(None))


@dataclass
class Axis:
    """One swept key. ``kind``: categorical (a list of values), bundle (labelled override
    lists), int or float (a range)."""

    key: str
    kind: str
    values: list = field(default_factory=list)
    bundles: dict[str, list[str]] = field(default_factory=dict)
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    def distribution(self):
        import optuna.distributions as d

        if self.kind in ("categorical", "bundle"):
            return d.CategoricalDistribution(self.values)
        if self.kind == "int":
            return d.IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return d.FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def overrides(self, value: Any) -> list[str]:
        if self.kind == "bundle":
            return list(self.bundles[value])
        return [f"{self.key}={format_value(value)}"]

    def probe_values(self) -> list:
        """Values that cover the axis for up-front validation: every choice, or both ends."""
        if self.kind in ("categorical", "bundle"):
            return list(self.values)
        return [int(self.low), int(self.high)] if self.kind == "int" else [self.low, self.high]


def format_value(value: Any) -> str:
    """A Python value as a Hydra override value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def flatten_space(space: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys joined with dots, down to each spec: ``{adapter: {r: [8, 16]}}`` (what
    ``+sweep.space.adapter.r=[8,16]`` on the command line makes) is ``{"adapter.r": [8, 16]}``."""
    flat: dict[str, Any] = {}
    for key, spec in space.items():
        name = f"{prefix}{key}"
        if isinstance(spec, dict) and spec and "choices" not in spec and not {"low", "high"} & set(spec):
            flat.update(flatten_space(spec, f"{name}."))
        else:
            flat[name] = spec
    return flat


def parse_space(space: dict[str, Any]) -> list[Axis]:
    """Parse ``sweep.space``; raises ConfigError naming the key that is malformed."""
    axes = []
    for key, spec in flatten_space(space).items():
        where = f"sweep.space.{key}"
        if isinstance(spec, (list, tuple)):
            values = list(spec)
            if not values:
                raise ConfigError(f"{where}: the list of values is empty")
            bad = [v for v in values if not isinstance(v, CATEGORICAL_TYPES)]
            if bad:
                raise ConfigError(f"{where}: values must be strings, numbers, booleans or null, got {bad[0]!r} "
                                  "(use {choices: {label: [overrides]}} for lists or several keys)")
            if len(set(map(repr, values))) != len(values):
                raise ConfigError(f"{where}: repeated values in {values}")
            axes.append(Axis(key, "categorical", values=values))
        elif isinstance(spec, dict) and "choices" in spec:
            choices = spec["choices"]
            if not isinstance(choices, dict) or not choices:
                raise ConfigError(f"{where}.choices: must be a non-empty mapping of label -> list of overrides")
            bundles = {}
            for label, overrides in choices.items():
                if isinstance(overrides, str):
                    overrides = [overrides]
                if not isinstance(overrides, (list, tuple)) or not all(isinstance(o, str) and "=" in o for o in overrides):
                    raise ConfigError(f"{where}.choices.{label}: must be a list of overrides like key=value")
                bundles[str(label)] = list(overrides)
            axes.append(Axis(key, "bundle", values=list(bundles), bundles=bundles))
        elif isinstance(spec, dict) and {"low", "high"} <= set(spec):
            unknown = set(spec) - {"low", "high", "log", "step", "int"}
            if unknown:
                raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; a range takes low, high, log, step, int")
            low, high = spec["low"], spec["high"]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
                raise ConfigError(f"{where}: needs numbers low < high, got low={low!r} high={high!r}")
            log = bool(spec.get("log", False))
            if log and low <= 0:
                raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
            if log and spec.get("step") is not None:
                raise ConfigError(f"{where}: step cannot be combined with log")
            kind = "int" if spec.get("int", False) else "float"
            axes.append(Axis(key, kind, low=low, high=high, log=log, step=spec.get("step")))
        else:
            raise ConfigError(f"{where}: expected a list of values, {{low, high[, log, step, int]}} or "
                              f"{{choices: {{label: [overrides]}}}}, got {spec!r}")
    return axes


def grid_space(axes: list[Axis]) -> dict[str, list]:
    """The GridSampler search space; every axis must be categorical."""
    ranged = [a.key for a in axes if a.kind not in ("categorical", "bundle")]
    if ranged:
        raise ConfigError(f"sweep.space.{ranged[0]}: a range cannot be gridded; give a list of values or use "
                          "sweep.sampler=tpe|random|nsga2")
    return {a.key: list(a.values) for a in axes}


def grid_points(axes: list[Axis]) -> list[dict]:
    """Every combination of a categorical space, as param dicts."""
    keys = [a.key for a in axes]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(a.values for a in axes))]


def point_key(params: dict) -> tuple:
    """A hashable identity of a configuration (floats compared by value)."""
    return tuple(sorted((k, round(v, 12) if isinstance(v, float) and math.isfinite(v) else v) for k, v in params.items()))


def trial_overrides(axes: list[Axis], params: dict) -> list[str]:
    """The overrides one trial adds for its sampled params."""
    out: list[str] = []
    for axis in axes:
        out += axis.overrides(params[axis.key])
    return out


def override_key(override: str) -> str:
    """The config key an override sets: ``+adapter.r=8`` -> ``adapter.r``."""
    return override.split("=", 1)[0].lstrip("+~")


@functools.cache  # merge_overrides runs per grid point and per trial; the file does not change
def preset_keys(name: str) -> frozenset[str]:
    """The config keys preset ``name`` (``conf/preset/NAME.yaml``) sets: the groups it overrides
    and the dotted keys of its values."""
    import yaml

    from harness.paths import CONF_DIR

    path = CONF_DIR / "preset" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset={name}: no such preset (conf/preset has {', '.join(sorted(p.stem for p in path.parent.glob('*.yaml')))})")
    spec = yaml.safe_load(path.read_text()) or {}
    keys = {next(iter(d)).removeprefix("override ").strip("/") for d in spec.pop("defaults", []) if isinstance(d, dict)}

    def walk(prefix: str, node) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            else:
                keys.add(f"{prefix}{key}")

    walk("", spec)
    return frozenset(keys)


def merge_overrides(*lists: list[str]) -> list[str]:
    """Concatenate override lists; a later override of the same key replaces an earlier one, and
    a ``preset=NAME`` replaces the earlier lists' overrides of every key the preset sets (its
    groups and its values; a key inside a group it swaps is kept, as after ``trainer=smoke``);
    in its own list, as on a command line, an explicit override still wins over the preset."""
    merged: dict[str, str] = {}
    for overrides in lists:
        before = set(merged)  # the earlier lists' keys; within one list Hydra's own order rules
        for o in overrides:
            key = override_key(o)
            if key == "preset" and "=" in o and o.split("=", 1)[1] not in ("null", ""):
                covered = preset_keys(o.split("=", 1)[1])
                for earlier in [k for k in merged if k in covered and k in before]:
                    del merged[earlier]
            merged.pop(key, None)
            merged[key] = o
    return list(merged.values())
