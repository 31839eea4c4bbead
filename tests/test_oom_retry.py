"""trainer.oom_retry: a run that runs out of memory in training runs again at half the micro-batch
and twice the accumulation, down to micro-batch 1; the record lists every attempt. Memory limits
are injected with the fault hook (fault.kind=oom only above a micro-batch size)."""

from __future__ import annotations

from harness.schema import ConfigError
from tests.helpers import compose_run, read_record, tiny, train_in_process

# Global batch 8 over 4 optimizer steps, from micro-batch 4 (accumulate 2).
BATCH = ["trainer.max_steps=4", "trainer.micro_batch_size=4", "trainer.global_batch_size=8"]


def train_handed_off(overrides: list[str], run_dir) -> dict:
    """In process, as the entry point hands a run off (harness.run.train): trainer.oom_retry is
    the entry point's, around harness.train.run_training's one attempt."""
    from harness.compose import compose
    from harness.run import train

    return train(*compose(overrides), run_dir)


def test_oom_in_training_retries_at_half_the_micro_batch_until_it_fits(chat_file, tmp_path):
    faults = ["fault.kind=oom", "fault.at_step=1", "fault.above_micro_batch_size=1"]  # fits only at micro-batch 1
    record = train_handed_off(tiny(chat_file, *BATCH, *faults, "trainer.oom_retry=true"), tmp_path / "retried")
    assert record["status"] == "ok", record.get("error")
    assert [(a["micro_batch_size"], a["accumulate"], a["status"]) for a in record["oom_retries"]] == [
        (4, 2, "oom"), (2, 4, "oom"), (1, 8, "ok")]
    assert "out of memory" in record["oom_retries"][0]["error"] and record["oom_retries"][-1]["error"] is None
    assert record["config"]["trainer"]["micro_batch_size"] == 1 and record["config"]["trainer"]["global_batch_size"] == 8
    assert read_record(tmp_path / "retried")["oom_retries"] == record["oom_retries"]  # the record on disk too
    # The run that fitted is the run one would have started at micro-batch 1 with the same global
    # batch: the same optimizer steps over the same examples, the same losses.
    direct = train_in_process(tiny(chat_file, "trainer.max_steps=4", "trainer.micro_batch_size=1",
                                   "trainer.global_batch_size=8"), tmp_path / "direct")
    assert record["optimizer_steps"] == direct["optimizer_steps"] == 4
    assert record["train_losses"] == direct["train_losses"]
    assert record["val_loss_last"] == direct["val_loss_last"]


def test_oom_at_micro_batch_one_is_recorded_with_every_attempt(chat_file, tmp_path):
    record = train_handed_off(tiny(chat_file, "trainer.max_steps=2", "trainer.micro_batch_size=3", "trainer.global_batch_size=6",
                                   "fault.kind=oom", "fault.at_step=0", "trainer.oom_retry=true"), tmp_path)
    assert record["status"] == "oom"
    # Half of 3 is 1 (the largest divisor of the global batch 6 that is at most 1.5).
    assert [(a["micro_batch_size"], a["accumulate"]) for a in record["oom_retries"]] == [(3, 2), (1, 6)]
    assert all(a["status"] == "oom" for a in record["oom_retries"])


def test_without_oom_retry_an_oom_ends_the_run(chat_file, tmp_path):
    record = train_in_process(tiny(chat_file, *BATCH, "fault.kind=oom", "fault.at_step=1"), tmp_path)
    assert record["status"] == "oom" and record["oom_in_training"] and "oom_retries" not in record
    assert compose_run(tiny(chat_file)).trainer.oom_retry is False  # off for single runs


def test_quality_sweeps_retry_and_memory_sweeps_do_not():
    from pathlib import Path

    import yaml

    from harness.paths import CONF_DIR

    for path in sorted(Path(CONF_DIR, "sweep").glob("*.yaml")):
        overrides = yaml.safe_load(path.read_text()).get("overrides", [])
        measures_memory = path.stem in ("memory_7b", "runtime_7b")  # an OOM is their finding
        assert ("trainer.oom_retry=true" in overrides) != measures_memory, path.name


def test_bad_fault_threshold_is_refused(chat_file):
    import pytest

    with pytest.raises(ConfigError, match="fault.above_micro_batch_size: must be >= 0"):
        compose_run(tiny(chat_file, "fault.above_micro_batch_size=-1"))
