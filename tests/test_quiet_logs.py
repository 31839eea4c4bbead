"""A library's warning repeated on every call is shown once, not once per matmul."""

from __future__ import annotations

import logging

from harness.models import log_repeats_once


def test_each_distinct_message_of_a_noisy_logger_is_shown_once(caplog):
    name = "bitsandbytes.autograd._functions.test"
    log_repeats_once(name)
    log_repeats_once(name)  # idempotent: one filter
    logger = logging.getLogger(name)
    with caplog.at_level(logging.WARNING, logger=name):
        for _ in range(3):
            logger.warning("inputs will be cast from torch.bfloat16 to float16 during quantization")
            logger.warning("another")
    assert [r.getMessage() for r in caplog.records] == [
        "inputs will be cast from torch.bfloat16 to float16 during quantization", "another"]
    assert len(logger.filters) == 1
