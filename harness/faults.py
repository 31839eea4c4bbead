"""Fault injection (``fault.kind=oom|nan|crash|kill|disk_full|sigint|oom_scoring``): real failures on demand, so the tests
can check that each one becomes the right record and that a sweep goes on after it."""

from __future__ import annotations

import os
import resource
import signal

import lightning as L
import torch

from .schema import FaultConfig


class FaultCallback(L.Callback):
    """Injects the configured fault at the start of optimizer step ``at_step``."""

    def __init__(self, fault: FaultConfig):
        self.fault = fault
        self.injected = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step < self.fault.at_step:
            return
        if self.fault.above_micro_batch_size and len(batch["input_ids"]) <= self.fault.above_micro_batch_size:
            return
        kind = self.fault.kind
        if kind == "oom":
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected by fault.kind=oom at step {trainer.global_step})")
        if kind == "crash":
            raise RuntimeError(f"injected crash (fault.kind=crash at step {trainer.global_step})")
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "sigint" and trainer.global_step == self.fault.at_step and not self.injected:
            os.kill(os.getpid(), signal.SIGINT)
        if kind == "disk_full" and not self.injected:
            # The kernel then fails each write past a few bytes with EFBIG, as a full disk
            # would with ENOSPC; without SIGXFSZ ignored, the first such write kills the process.
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (256, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        if kind == "nan":
            # Poison one trainable weight: the real forward then yields a NaN loss.
            weight = next(p for p in pl_module.parameters() if p.requires_grad)
            with torch.no_grad():
                weight.fill_(float("nan"))
        self.injected = True


def fault_callbacks(fault: FaultConfig) -> list[L.Callback]:
    return [] if fault.kind in ("none", "oom_scoring") else [FaultCallback(fault)]  # oom_scoring: harness.scoring
