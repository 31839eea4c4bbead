"""preset=smoke: the CPU-sized run written once, for the tests and every sweep's smoke scale."""

from __future__ import annotations

import pytest

from harness.schema import ConfigError
from sweeps.space import merge_overrides, preset_keys
from tests.helpers import compose_run

SMOKE = ["model=tiny", "trainer=smoke", "data.train_size=16", "data.val_size=4", "data.test_size=8",
         "data.max_seq_len=128", "logger=none", "eval=custom", "eval.tasks=[harness_heldout]", "eval.limit=8"]


def test_the_smoke_preset_composes_to_the_tiny_run_it_names():
    assert compose_run(["preset=smoke"]) == compose_run(SMOKE)
    later = compose_run(["preset=smoke", "data.train_size=32", "eval.limit=4"])  # the command line still wins
    assert later.data.train_size == 32 and later.eval.limit == 4 and later.model == compose_run(SMOKE).model


def test_a_later_preset_replaces_earlier_overrides_of_what_it_sets():
    assert preset_keys("smoke") == {"model", "trainer", "eval", "logger", "data.train_size", "data.val_size",
                                    "data.test_size", "data.max_seq_len", "eval.tasks", "eval.limit"}
    sweep = ["data=sharegpt_full", "data.train_size=4000", "eval=probes", "trainer.oom_retry=true"]
    merged = merge_overrides(sweep, ["preset=smoke"], ["data.val_size=2"])
    assert merged == ["data=sharegpt_full", "trainer.oom_retry=true", "preset=smoke", "data.val_size=2"]
    run = compose_run(merged)
    assert (run.data.train_size, run.data.val_size, run.trainer.oom_retry, run.eval.limit) == (16, 2, True, 8)
    # In one list (a command line), an explicit value beats the preset wherever it stands.
    assert merge_overrides(["data.train_size=100", "preset=smoke"]) == ["data.train_size=100", "preset=smoke"]
    assert compose_run(["data.train_size=100", "preset=smoke"]).data.train_size == 100
    with pytest.raises(ConfigError, match="preset=huge: no such preset"):
        merge_overrides(["preset=huge"])
