"""Every resolved config the harness ships, as one sorted JSON document: each option of each
config group (with the value it needs to compose, if any), and every grid point (or range probe)
of every named sweep at both scales, composed as the sweep driver composes a trial.

A refactor that claims to keep behaviour keeps this dump identical: ``python -m tests.config_dump
OUT.json`` before and after, then ``diff`` (about 40 s). For each configuration it holds ``resolved``
(what a record stores) and ``run`` (the validated :class:`RunConfig`, every field as a plain value),
or ``error`` (the one line a user would see).

The options' part (no sweeps; about 8 s) is also a test: :func:`option_summary`, the default run's
resolved config and what each option and bad value changes in it, must equal ``tests/golden/
config_options.json`` (``tests/test_config.py``); ``HARNESS_UPDATE_GOLDEN=1`` rewrites it for a
change meant to alter a config.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from pathlib import Path

from harness.compose import compose
from harness.errors import ConfigError
from harness.module import flat_config
from harness.paths import CONF_DIR

GOLDEN = Path(__file__).parent / "golden" / "config_options.json"
ABSENT = "<absent>"
GROUPS = ["model", "data", "adapter", "quant", "optimizer", "scheduler", "trainer", "eval", "logger", "preset"]
# Options that need a user value to compose into a valid run.
REQUIRED_VALUES = {
    ("model", "hf"): ["model.name_or_path=some/model"],
    ("data", "alpaca_file"): ["data.path=train.jsonl"],
    ("data", "sharegpt_file"): ["data.path=train.jsonl"],
    ("eval", "custom"): ["eval.tasks=[harness_arith_2da]"],
}
# Sweeps that need a space to plan.
SWEEP_VALUES = {"custom": ["+sweep.space.adapter.r=[8,16]"]}
# Every value of each closed set, given on the command line (fault.kind=nan reads as a float there).
CLOSED_SETS = {
    "model.init": "pretrained random", "model.attn_implementation": "sdpa eager flash_attention_2 flex_attention",
    "data.format": "alpaca sharegpt", "data.roles": "any strict", "data.template": "alpaca chat",
    "data.overlong": "drop truncate", "adapter.kind": "lora dora vera full",
    "adapter.init": "default gaussian pissa olora loftq eva corda", "quant.mode": "none int8 nf4 fp4",
    "trainer.precision": "auto bf16-true bf16-mixed 16-mixed 32-true", "trainer.accelerator": "auto cpu gpu cuda",
    "trainer.strategy": "auto ddp fsdp",
    "trainer.compile_mode": "default reduce-overhead max-autotune max-autotune-no-cudagraphs",
    "eval.name": "none local probes raschka custom", "logger.name": "wandb csv tensorboard mlflow none",
    "logger.mode": "auto offline online", "fault.kind": "none oom nan crash kill disk_full",
    "sweep.sampler": "grid tpe random nsga2", "sweep.pruner": "none median", "sweep.launcher": "local submitit",
    "sweep.scale": "default smoke", "sweep.submitit.cluster": "slurm local debug",
}
# A value outside each closed set: the one line a user sees for it.
BAD_VALUES = [
    ["model.init=bogus"], ["model.attn_implementation=bogus"], ["data.format=bogus"], ["data.roles=bogus"],
    ["data.template=bogus"], ["data.overlong=bogus"], ["adapter.kind=bogus"], ["adapter.init=bogus"],
    ["adapter.targets=bogus"], ["quant.mode=bogus"], ["trainer.strategy=bogus"], ["trainer.compile_mode=bogus"],
    ["trainer.precision=bogus"], ["trainer.accelerator=bogus"], ["eval.name=bogus"], ["logger.name=bogus"],
    ["logger.mode=bogus"], ["fault.kind=bogus"], ["trainer.precision=1"], ["quant.mode=true"],
    *(["+sweep=rank_alpha", f"sweep.{key}=bogus"] for key in
      ("sampler", "pruner", "launcher", "scale", "pack", "seeds_together", "submitit.cluster")),
    ["+sweep=rank_alpha", "sweep.objectives=[{metric:val_loss_last,direction:bogus}]"],
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def plain(value):
    """A validated config value as JSON would hold it (an Enum member as its value)."""
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return {"enum": type(value).__name__, "value": value.value}
    return value


def entry(overrides: list[str]) -> dict:
    try:
        run, resolved = compose(overrides)
    except ConfigError as exc:
        return {"overrides": overrides, "error": str(exc)}
    return {"overrides": overrides, "resolved": resolved, "run": plain(run)}


def sweep_entries(name: str, scale: str) -> dict[str, dict]:
    """The sweep's own config, then every configuration its driver would compose."""
    from sweeps.space import grid_points, merge_overrides, parse_space, trial_overrides

    head = [f"+sweep={name}", f"sweep.scale={scale}", *SWEEP_VALUES.get(name, [])]
    out = {f"sweep={name} scale={scale}": entry(head)}
    try:
        run, _ = compose(head)
    except ConfigError:
        return out
    cfg = run.sweep
    space = dict(cfg.space)
    extra: list[str] = []
    if scale == "smoke":
        space.update(cfg.smoke.get("space") or {})
        extra = list(cfg.smoke.get("overrides") or [])
    axes = parse_space(space)
    base = merge_overrides(list(cfg.overrides), extra)
    if str(cfg.sampler) == "grid":
        points = grid_points(axes)
    else:
        points = [{a.key: a.probe_values()[i % len(a.probe_values())] for a in axes}
                  for i in range(max(len(a.probe_values()) for a in axes))]
    for params in points:
        where = ", ".join(f"{k}={v}" for k, v in params.items())
        out[f"sweep={name} scale={scale} point {where}"] = entry(merge_overrides(base, trial_overrides(axes, params)))
    return out


def option_entries() -> dict[str, dict]:
    """The default run, each option of each group, and one bad value of each closed set."""
    configs = {"default": entry([])}
    for group in GROUPS:
        for option in options(group):
            configs[f"{group}={option}"] = entry([f"{group}={option}", *REQUIRED_VALUES.get((group, option), [])])
    for overrides in BAD_VALUES:
        configs["bad " + " ".join(overrides)] = entry(overrides)
    return configs


def dump() -> dict[str, dict]:
    configs = option_entries()
    for name in options("sweep"):
        for scale in ("default", "smoke"):
            configs.update(sweep_entries(name, scale))
    for key, values in CLOSED_SETS.items():
        for value in values.split():
            overrides = ["+sweep=rank_alpha"] * key.startswith("sweep.") + [f"{key}={value}"]
            configs["value " + " ".join(overrides)] = entry(overrides)
    return configs


def option_summary() -> dict[str, dict]:
    """The default run's resolved config (flat), and for each option and bad value what differs from
    it (a key it lacks as ``<absent>``) or its error line; as JSON holds it."""
    entries = option_entries()
    base = flat_config(entries["default"]["resolved"])
    summary = {"default": base}
    for name, got in entries.items():
        if name == "default":
            continue
        if "error" in got:
            summary[name] = {"error": got["error"]}
            continue
        mine = flat_config(got["resolved"])
        summary[name] = {key: mine.get(key, ABSENT) for key in sorted(set(mine) | set(base))
                         if mine.get(key, ABSENT) != base.get(key, ABSENT)}
    return json.loads(json.dumps(summary))


def golden_text(summary: dict) -> str:
    return json.dumps(summary, sort_keys=True, indent=1) + "\n"


def main(argv: list[str]) -> None:
    text = json.dumps(dump(), sort_keys=True, indent=1, default=repr) + "\n"
    if argv:
        Path(argv[0]).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    import logging

    logging.disable(logging.WARNING)
    main(sys.argv[1:])
