"""The default run sized for a machine without a GPU: which cpu_* values apply, when they do
not, and what the run's output and record say about it."""

from __future__ import annotations

from harness.train import command_line_keys, plan_steps, size_for_cpu
from tests.helpers import compose_run, read_record, run_cli

PROBES = ["harness_heldout", "harness_agreement", "harness_capitals", "harness_add1d"]


def test_cpu_sizing_applies_to_keys_the_user_left_alone():
    run = compose_run([])  # the embedded default, as `make run` composes it
    sized_run, sized = size_for_cpu(run, "cpu", set())
    assert sized == {
        "trainer.micro_batch_size": {"configured": 4, "applied": 1},
        "trainer.global_batch_size": {"configured": 16, "applied": 2},
        "data.max_seq_len": {"configured": 512, "applied": 128},
        "data.val_size": {"configured": 32, "applied": 8},
        "eval.tasks": {"configured": list(run.eval.tasks), "applied": PROBES},
        "eval.limit": {"configured": None, "applied": 40},
        "eval.batch_size": {"configured": 16, "applied": 4},
    }
    assert (sized_run.trainer.micro_batch_size, sized_run.trainer.global_batch_size) == (1, 2)
    assert sized_run.trainer.accumulate_grad_batches == 2
    assert sized_run.data.max_seq_len == 128 and sized_run.data.val_size == 8 and sized_run.eval.tasks == PROBES and sized_run.eval.limit == 40
    # The configured run is untouched (records and caches see the sized copy only).
    assert run.trainer.micro_batch_size == 4 and run.eval.limit is None

    steps, note = plan_steps(sized_run, 1000, "cpu", sized)
    assert steps == 12
    assert note.startswith("no GPU found")
    for part in ("trainer.cpu_max_steps=12 of 500", "trainer.micro_batch_size=1 (configured 4)",
                 "data.max_seq_len=128 (configured 512)", "data.val_size=8 (configured 32)", "4 of the 11 eval.tasks", "first 40 documents",
                 "standard errors", "trainer.cpu_sizing=false"):
        assert part in note, part


def test_cpu_sizing_leaves_keys_the_user_set():
    run = compose_run(["trainer.micro_batch_size=2", "eval.limit=10", "data.max_seq_len=128"])
    user = {"trainer.micro_batch_size", "eval.limit", "data.max_seq_len", "eval.tasks"}
    sized_run, sized = size_for_cpu(run, "cpu", user)
    # Micro- and global batch go together: setting one keeps both; a set limit is never replaced.
    assert set(sized) == {"eval.batch_size", "data.val_size"}
    assert (sized_run.trainer.micro_batch_size, sized_run.trainer.global_batch_size) == (2, 16)
    assert sized_run.data.max_seq_len == 128 and sized_run.eval.limit == 10
    assert sized_run.eval.tasks == run.eval.tasks and sized_run.eval.batch_size == 4


def test_no_cpu_sizing_on_a_gpu_with_the_switch_off_or_outside_the_default_groups():
    assert size_for_cpu(compose_run([]), "cuda", set()) == (compose_run([]), {})
    off = compose_run(["trainer.cpu_sizing=false"])
    assert size_for_cpu(off, "cpu", set()) == (off, {})
    steps, note = plan_steps(off, 1000, "cpu")
    assert steps == 63 and note is None  # the full schedule: one override away
    # A run composed by its caller (not `python -m harness.run`) is not resized.
    assert command_line_keys() is None
    # trainer=smoke and eval=probes set no cpu_* values.
    other = compose_run(["trainer=smoke", "eval=probes", "trainer.max_steps=null"])
    assert size_for_cpu(other, "cpu", set()) == (other, {})


def test_cpu_sizing_values_are_validated():
    import pytest

    from harness.schema import ConfigError

    for overrides, key in ((["trainer.cpu_micro_batch_size=3"], "trainer.cpu_global_batch_size"),
                           (["trainer.cpu_micro_batch_size=null"], "trainer.cpu_global_batch_size"),
                           (["trainer.cpu_max_seq_len=8"], "trainer.cpu_max_seq_len"),
                           (["eval.cpu_limit=0"], "eval.cpu_limit"),
                           (["eval.cpu_tasks=[]"], "eval.cpu_tasks")):
        with pytest.raises(ConfigError, match=key):
            compose_run(overrides)


def test_cpu_run_says_what_was_sized_in_output_and_record(chat_file, tmp_path):
    run_dir = tmp_path / "run"
    # data.max_seq_len is set here (a small test model), so the CPU sequence cap stays off.
    result = run_cli(["model=tiny", "data=sharegpt_file", f"data.path={chat_file}", "data.train_size=32",
                      "data.val_size=4", "data.test_size=8", "data.max_seq_len=128", "logger=none",
                      "trainer.accelerator=cpu", "trainer.cpu_max_steps=3"], run_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    record = read_record(run_dir)
    assert record["status"] == "ok"
    assert set(record["cpu_sizing"]) == {"trainer.micro_batch_size", "trainer.global_batch_size", "eval.tasks",
                                         "eval.limit", "eval.batch_size"}
    assert record["config"]["trainer"]["micro_batch_size"] == 1 and record["config"]["data"]["max_seq_len"] == 128
    assert record["optimizer_steps"] == 3 and record["train_tokens_seen"] > 0
    assert "trainer.cpu_max_steps=3" in record["schedule_note"]
    assert "sized for the CPU" in result.stdout  # the run log on the console
    assert set(record["eval"]) == set(PROBES) == set(record["eval_base"])
    # Scored on the subset, with lm-eval's standard errors.
    assert record["eval"]["harness_add1d"]["gold_logprob"]["stderr"] > 0
