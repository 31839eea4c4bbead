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


def test_oom_retry_does_not_change_what_training_computes():
    assert resume_config_changes(config(oom_retry=False), config(oom_retry=True)) == {}
    assert "optimizer.lr" in resume_config_changes(config(), {**config(), "optimizer": {"lr": 1e-3}})
