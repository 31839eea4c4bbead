"""Resuming from a checkpoint saved by an older harness, whose config lacks newer keys."""

from harness.module import resume_config_changes, schema_defaults


def config(**trainer):
    return {"adapter": {"r": 8, "init": "default"}, "trainer": {"max_steps": 10, **trainer}, "optimizer": {"lr": 3e-4}}


def test_a_key_the_checkpoint_lacks_counts_as_its_default():
    saved = {"adapter": {"r": 8}, "trainer": {"max_steps": 10}, "optimizer": {"lr": 3e-4}}  # before adapter.init
    assert schema_defaults()["adapter.init"] == "default"
    assert resume_config_changes(saved, config()) == {}


def test_a_newer_key_set_away_from_its_default_is_a_change():
    saved = {"adapter": {"r": 8}, "trainer": {"max_steps": 10}, "optimizer": {"lr": 3e-4}}
    current = config()
    current["adapter"]["init"] = "pissa"
    assert resume_config_changes(saved, current) == {"adapter.init": {"checkpoint": "default", "run": "pissa"}}


def test_a_checkpoint_from_before_optimizer_classes_in_the_yaml_resumes_under_its_option():
    saved = {"optimizer": {"name": "sgd", "lr": 0.1}, "scheduler": {"name": "linear"}}  # before target and type
    current = {"optimizer": {"name": "sgd", "lr": 0.1, "target": "torch.optim.SGD", "states": 1, "fused": False},
               "scheduler": {"name": "linear", "type": "linear"}}
    assert resume_config_changes(saved, current) == {}
    assert "optimizer.name" in resume_config_changes(saved, {**current, "optimizer": {**current["optimizer"], "name": "adamw"}})
    assert "optimizer.target" in resume_config_changes(current, {**current, "optimizer": {**current["optimizer"], "target": "torch.optim.Adam"}})


def test_oom_retry_does_not_change_what_training_computes():
    assert resume_config_changes(config(oom_retry=False), config(oom_retry=True)) == {}
    assert "optimizer.lr" in resume_config_changes(config(), {**config(), "optimizer": {"lr": 1e-3}})


def test_a_sweep_resumes_when_only_resume_neutral_overrides_differ(tmp_path):
    import optuna
    import pytest

    from harness.schema import ConfigError
    from sweeps.study import open_study

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"

    def signature(*overrides):
        return {"space": {"adapter.r": [8, 16]}, "overrides": list(overrides), "seeds": [1, 2], "planned": 2}

    def reopen(sig):
        return open_study(storage, "s", ["minimize"], optuna.samplers.RandomSampler(), optuna.pruners.NopPruner(), sig)

    reopen(signature("data=sharegpt_full", "logger=none"))  # a sweep started before trainer.oom_retry existed
    reopen(signature("trainer.oom_retry=true", "data=sharegpt_full", "logger=csv"))
    with pytest.raises(ConfigError, match="different overrides"):
        reopen(signature("trainer.oom_retry=true", "data=sharegpt_lima"))


def test_a_carried_sweep_dir_finds_its_records_where_it_now_lies(tmp_path):
    from sweeps.driver import relocated

    (tmp_path / "trials" / "3" / "seed_1").mkdir(parents=True)
    stored = "/elsewhere/outputs/sweeps/seeds/trials/3/seed_1"  # the machine the sweep ran on
    assert relocated(stored, tmp_path) == tmp_path / "trials" / "3" / "seed_1"
    assert relocated(str(tmp_path / "trials" / "3" / "seed_1"), tmp_path / "other") == tmp_path / "trials" / "3" / "seed_1"
