"""GPU paths, run on a lent GPU (`pytest -m gpu`); skipped on machines without CUDA."""

from __future__ import annotations

import pytest
import torch

from tests.test_train import tiny, train_in_process

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("quant", ["none", "nf4", "int8"])
def test_scores_after_training_on_the_gpu(chat_file, tmp_path, quant):
    # Lightning's teardown moves a fitted model to the CPU; scoring must still run on the GPU
    # (it once ran on the CPU, and bitsandbytes int8 layers failed there).
    record = train_in_process(tiny(chat_file, f"quant={quant}", "eval=custom", "eval.tasks=[harness_heldout]",
                                   "eval.limit=4"), tmp_path)
    assert record["status"] == "ok", record.get("error")
    assert record["device"]["type"] == "cuda"
    assert record["eval"]["harness_heldout"]["token_nll"]["value"] > 0
    assert record["peak_gpu_allocated_bytes"] > 0
