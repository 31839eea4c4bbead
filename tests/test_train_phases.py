"""The seams of the phased training run that no end-to-end test on a CPU reaches: how each way a
run can end becomes its status (harness.train.OUTCOMES), and the CUDA-graph guard's gradient copy
(harness.speed), checked without a GPU."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from harness.module import DivergedError
from harness.signals import RunInterrupted
from harness.speed import cuda_graph_guard
from harness.train import outcome
from harness.trial import PrunedError


def ended_by(exc: BaseException) -> dict:
    try:
        raise exc
    except BaseException as caught:  # noqa: BLE001 - each way of ending, as run_training catches it
        return outcome(caught)


def test_each_way_a_run_ends_has_its_status_and_error():
    stopped = ended_by(RunInterrupted(signal.SIGTERM, step=3))
    assert stopped["status"] == "interrupted" and stopped["signal"] == "SIGTERM" and stopped["checkpoint"] is None
    assert stopped["error"].startswith("stopped by SIGTERM at optimizer step 3")
    assert ended_by(DivergedError("training loss became nan")) == {"status": "diverged", "error": "training loss became nan"}
    assert ended_by(PrunedError("pruned at step 2")) == {"status": "pruned", "error": "pruned at step 2"}
    oom = ended_by(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB\nmore detail"))
    assert oom == {"status": "oom", "error": "CUDA out of memory. Tried to allocate 2 GiB"}
    crash = ended_by(RuntimeError("injected crash"))
    assert crash["status"] == "failed" and crash["error"] == "RuntimeError: injected crash"
    assert crash["traceback"].startswith("Traceback") and crash["traceback"].rstrip().endswith("RuntimeError: injected crash")


def test_an_end_the_except_clause_does_not_catch_still_names_its_reason(chat_file, tmp_path, monkeypatch):
    # A library's sys.exit inside the run (Lightning's own Ctrl-C path ends so) passes through
    # run_training's except clause; the record written on the way out must still say why.
    import json

    import harness.train
    from tests.helpers import tiny, train_in_process

    def exits(*args, **kwargs):
        raise SystemExit(3)

    monkeypatch.setattr(harness.train, "fit", exits)
    with pytest.raises(SystemExit):
        train_in_process(tiny(chat_file), tmp_path / "run")
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["status"] == "failed" and record["error"] == "SystemExit raised inside the run: 3"
    monkeypatch.setattr(harness.train, "fit", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        train_in_process(tiny(chat_file), tmp_path / "again")
    record = json.loads((tmp_path / "again" / "record.json").read_text())
    assert record["status"] == "interrupted" and record["signal"] == "SIGINT"


def test_a_long_traceback_keeps_its_last_4000_characters():
    crash = ended_by(ValueError("x" * 5000))
    assert len(crash["traceback"]) == 4000 and crash["traceback"].rstrip().endswith("x")


@pytest.mark.parametrize("accumulate", [1, 2])
def test_cuda_graph_guard_copies_the_first_micro_batch_gradients_of_each_step(accumulate):
    model = nn.Linear(3, 2)
    trainer, pl_module = SimpleNamespace(accumulate_grad_batches=accumulate), SimpleNamespace(model=model)
    guard = cuda_graph_guard()
    guard.on_train_start(trainer, pl_module)

    def backward() -> bool:
        """One micro-batch's backward and the guard's hook; whether .grad moved to new memory."""
        model(torch.randn(4, 3)).sum().backward()
        after_backward = model.weight.grad.data_ptr()
        guard.on_after_backward(trainer, pl_module)
        return model.weight.grad.data_ptr() != after_backward

    copied = [backward(), backward()]
    guard.on_before_optimizer_step(trainer, pl_module, None)
    model.zero_grad(set_to_none=True)
    copied.append(backward())
    # With accumulation, the first micro-batch of every optimizer step; without, never.
    assert copied == ([True, False, True] if accumulate > 1 else [False, False, False])
