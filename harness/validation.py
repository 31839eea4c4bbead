"""From a composed config to a validated run: :func:`validate` checks every key against the
schema (a typo is named, with the key probably meant) and every number is finite, then builds the
typed :class:`~harness.schema.RunConfig`, whose ``__post_init__`` methods check ranges and
cross-field rules; :func:`resolved_config` is the plain dict a record stores.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from .errors import ConfigError
from .schema import RunConfig


def resolved_config(cfg: DictConfig, run: RunConfig) -> dict:
    """The composed config as a plain dict for records, with the values validation derives
    (``adapter.alpha`` from ``adapter.alpha_over_r``) as the run uses them."""
    resolved = OmegaConf.to_container(_without_hydra(cfg), resolve=True, enum_to_str=True)  # closed sets as strings
    resolved["adapter"]["alpha"] = run.adapter.alpha
    return resolved


def _without_hydra(cfg: DictConfig) -> DictConfig:
    """The run's config without the ``hydra`` node that ``return_hydra_config`` adds (its run and
    sweep dirs resolve only where Hydra runs), still typed by the schema."""
    if "hydra" not in cfg:
        return cfg
    plain = cfg.copy()
    with open_dict(plain):
        del plain["hydra"]
    return plain


def validate(cfg: DictConfig) -> RunConfig:
    """Turn a composed config into a :class:`RunConfig`, running every range check.

    Raises :class:`ConfigError` naming the offending key.
    """
    from omegaconf.errors import OmegaConfBaseException

    plain = _without_hydra(cfg)
    check_keys_and_numbers(plain)
    try:
        run = OmegaConf.to_object(plain)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "config"
        raise ConfigError(f"{key}: {str(exc).splitlines()[0]}") from None
    if not isinstance(run, RunConfig):
        raise ConfigError("config: not composed from the run schema (is conf/config.yaml intact?)")
    return run


# Names users bring from peft / transformers for the schema's own keys: suggested when difflib
# finds nothing close (``rank`` is far from ``r`` by spelling).
KEY_ALIASES = {"rank": "r", "lora_r": "r", "lora_rank": "r", "lora_alpha": "alpha", "lora_dropout": "dropout",
               "target_modules": "targets", "learning_rate": "lr", "num_epochs": "epochs",
               "num_train_epochs": "epochs", "batch_size": "micro_batch_size", "model_name": "name_or_path"}


def _schema_fields(schema: type) -> dict[str, Any]:
    """Field name -> type of a schema dataclass (annotations resolved)."""
    hints = typing.get_type_hints(schema)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(schema)}


def _dataclass_of(hint: Any) -> type | None:
    """The schema dataclass a field holds (``SweepConfig | None`` -> SweepConfig), or None for an
    open value (a mapping, a list, a scalar)."""
    if dataclasses.is_dataclass(hint):
        return hint
    return next((a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)), None)


def unknown_key_error(key: str, known: typing.Iterable[str]) -> ConfigError:
    """``KEY: unknown key`` with the key probably meant (a close spelling or a known alias)."""
    parent, _, leaf = key.rpartition(".")
    known = sorted(known)
    guess = difflib.get_close_matches(leaf, known, n=1, cutoff=0.6)
    if not guess and KEY_ALIASES.get(leaf.lower()) in known:
        guess = [KEY_ALIASES[leaf.lower()]]
    if guess:
        return ConfigError(f"{key}: unknown key; did you mean {parent + '.' if parent else ''}{guess[0]}?")
    return ConfigError(f"{key}: unknown key; the keys{' of ' + parent if parent else ''} are {', '.join(known)}")


def unknown_key_error_at(key: str, schema: type | None = None) -> ConfigError | None:
    """The unknown-key error for a dotted key of the run schema (as Hydra names it when an
    override sets a key that does not exist), or None when the key's parent is not a schema.
    ``schema``: the dataclass that lacks the key, when the error says (then ``key`` may be relative)."""
    if dataclasses.is_dataclass(schema):
        return unknown_key_error(key, _schema_fields(schema))
    schema = RunConfig
    parts = key.split(".")
    for part in parts[:-1]:
        fields = _schema_fields(schema)
        schema = _dataclass_of(fields.get(part)) if part in fields else None
        if schema is None:
            return None
    return unknown_key_error(key, _schema_fields(schema))


def check_keys_and_numbers(cfg: DictConfig) -> None:
    """Every key of the composed config is one the schema has, and every number is finite.

    Hydra's ``+key=value`` adds a key even where the schema has none, and OmegaConf then drops it
    silently: a typo (``+trainer.epoch=2``) would run as if never typed. Only the schema's open
    mappings (``optimizer.lr_ratios``, ``model.arch``, ``sweep.space``, ``sweep.smoke``,
    ``sweep.submitit.additional_parameters``: dict-typed fields) take new keys. inf and nan parse
    as floats but are no setting anywhere (a learning rate, a ratio, a space value).
    """
    from omegaconf import ListConfig

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, DictConfig):
            schema = OmegaConf.get_type(node)
            if dataclasses.is_dataclass(schema):
                known = _schema_fields(schema)
                for key in node.keys():
                    if key not in known:
                        raise unknown_key_error(f"{prefix}{key}", known)
            for key in node.keys():
                if node._get_node(key)._is_missing():
                    continue
                walk(node[key], f"{prefix}{key}.")
        elif isinstance(node, ListConfig):
            for i in range(len(node)):
                walk(node[i], f"{prefix.rstrip('.')}[{i}].")
        elif isinstance(node, float) and not math.isfinite(node):
            raise ConfigError(f"{prefix.rstrip('.')}: must be a finite number, got {node}")

    walk(cfg, "")
