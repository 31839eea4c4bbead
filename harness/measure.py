"""Measurement: peak memory, wall time, throughput and MFU, the way the reference study measured.

Peak GPU memory is ``torch.cuda.max_memory_allocated()``, as in the reference study (which
reported it /1e9 as "GB") for its training loop. A run records three peaks: the training phase
(reset when training starts: what the study measured, and what verdicts and the estimate use),
the scoring phase (lm-eval passes, base and tuned), and the whole process. The counter is also
reset where a random-init quantized model drops the full-precision copy it was quantized from.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time

import lightning as L
import psutil
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

GIB = 1024**3

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' spec sheets, for MFU.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
}


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def gpu_peak_flops(override_tflops: float | None = None) -> float | None:
    """The GPU's dense bf16 peak, from ``trainer.peak_tflops`` or the spec table."""
    if override_tflops:
        return override_tflops * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


def train_flops_per_token(total_params: int, trainable_params: int, n_layers: int, hidden: int, seq_len: float) -> float:
    """Model FLOPs per trained token (no recomputation counted, as MFU conventionally does).

    Forward 2N; backward 2N for the activation gradients through every weight plus 2 per
    trainable weight for the weight gradients (full fine-tuning: the usual 6N). Attention adds
    4·L·s·h forward (QK^T and AV), three times that with backward.
    """
    matmul = 2 * total_params + 2 * total_params + 2 * trainable_params
    attention = 3 * 4 * n_layers * seq_len * hidden
    return matmul + attention


WARMUP_STEPS = 2


class MeasureCallback(L.Callback):
    """Times training, counts non-padding tokens, and shows tokens/s on the progress bar."""

    def __init__(self, warmup_steps: int | None = None, peaks: PhasePeaks | None = None):
        self.peaks = peaks  # the training phase's peak memory starts and ends with training
        self.train_start = self.train_end = None
        self.tokens = 0
        self.sequences = 0
        # Steady-state rate: from the end of optimizer step ``warmup_steps`` (compilation,
        # allocator growth and cache warm-up are behind) to the end of training.
        self.warmup_steps = WARMUP_STEPS if warmup_steps is None else warmup_steps
        self.steady_start = None
        self.steady_tokens = 0
        self.steady_steps = 0
        self._logged_step = -1

    def _sync(self, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_start(self, trainer, pl_module):
        self._sync(pl_module)
        if self.peaks is not None:
            self.peaks.begin("train")
        self.train_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        mask = batch["attention_mask"]
        self.tokens += batch["num_tokens"] if "num_tokens" in batch else int(mask.sum())
        self.sequences += mask.shape[0]
        if self.steady_start is None and trainer.global_step == self.warmup_steps:
            self._sync(pl_module)
            self.steady_start, self.steady_tokens, self.steady_steps = time.perf_counter(), self.tokens, trainer.global_step
        # Straight to the loggers, not through self.log: that copies each number to the GPU and
        # waits for it, a host stall every step (about 20% of the 135M shape's speed on an H100).
        step, rate = trainer.global_step, self.tokens_per_second
        if trainer.loggers and rate and step % trainer.log_every_n_steps == 0 and step != self._logged_step:
            self._logged_step = step  # once per optimizer step, not per accumulated micro-batch
            for logger in trainer.loggers:
                logger.log_metrics({"tok_s": rate}, step=step)

    @property
    def tokens_per_second(self) -> float | None:
        """Non-padding tokens per second since training started (compilation included)."""
        elapsed = time.perf_counter() - self.train_start if self.train_start is not None else 0
        return self.tokens / elapsed if elapsed > 0 else None

    def on_train_end(self, trainer, pl_module):
        self._sync(pl_module)
        self.train_end = time.perf_counter()
        if self.peaks is not None:
            self.peaks.end("train")
        self.steady_steps = trainer.global_step - self.steady_steps if self.steady_start is not None else 0
        self.steady_tokens = self.tokens - self.steady_tokens if self.steady_start is not None else 0

    @property
    def train_seconds(self) -> float | None:
        if self.train_start is None or self.train_end is None:
            return None
        return self.train_end - self.train_start


class HostMetricsBar(TQDMProgressBar):
    """Lightning's progress bar, plus the last optimizer step's loss and the tokens/s, both
    already on the host (logged with self.log, each would cost a GPU sync per step)."""

    def __init__(self, measure: MeasureCallback, refresh_rate: int = 1):
        super().__init__(refresh_rate=refresh_rate)
        self.measure = measure

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        losses = getattr(pl_module, "train_losses", None)
        if losses:
            items["loss"] = f"{losses[-1]:.4g}"
        rate = self.measure.tokens_per_second if trainer.training else None
        if rate:
            items["tok_s"] = f"{rate:,.0f}"
        return items


def process_age_seconds() -> float | None:
    """Seconds since this process started (None where the OS does not say)."""
    try:
        return time.time() - psutil.Process().create_time()
    except (psutil.Error, OSError):
        return None


def _gpu_peaks() -> tuple[int, int]:
    return torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()


def _peak_fields(prefix: str, allocated: int, reserved: int) -> dict:
    return {f"{prefix}gpu_allocated_bytes": allocated, f"{prefix}gpu_reserved_bytes": reserved,
            f"{prefix}gpu_allocated_gib": round(allocated / GIB, 3), f"{prefix}gpu_reserved_gib": round(reserved / GIB, 3),
            f"{prefix}gpu_allocated_gb": round(allocated / 1e9, 3), f"{prefix}gpu_reserved_gb": round(reserved / 1e9, 3)}


class PhasePeaks:
    """Peak GPU memory per phase of a run (``train``, ``eval``), and over the whole process.

    ``begin(phase)`` folds CUDA's peaks into the process peak, hands the allocator's unused
    cached blocks back to the GPU and resets the peak counter; ``end(phase)`` keeps the phase's
    peak (a phase entered twice keeps the larger). On a CPU there is no counter to reset:
    phases get the process's peak RSS so far, and say so.

    Emptying the cache at a phase's start makes its reserved peak its own, and lets the runs
    sharing the GPU use what the last phase no longer needs: scoring's batches differ in shape
    from training's, so training's cache, kept, stayed reserved beside scoring's own (packs of
    five on an H100: 19 GiB reserved in training, 26 GiB while scoring; docs/benchmarks.md,
    2026-12-06).
    """

    def __init__(self, device: str):
        self.gpu = device == "cuda" and torch.cuda.is_available()
        self.process = (0, 0)
        self.phases: dict[str, tuple[int, int]] = {}

    def _fold(self) -> tuple[int, int]:
        now = _gpu_peaks()
        self.process = (max(self.process[0], now[0]), max(self.process[1], now[1]))
        return now

    def begin(self, phase: str) -> None:
        if self.gpu:
            self._fold()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def end(self, phase: str) -> None:
        if self.gpu:
            now = self._fold()
            old = self.phases.get(phase, (0, 0))
            self.phases[phase] = (max(old[0], now[0]), max(old[1], now[1]))
        else:
            rss = peak_rss_bytes()
            self.phases[phase] = (max(self.phases.get(phase, (0, 0))[0], rss), 0)

    @contextlib.contextmanager
    def phase(self, phase: str):
        """``begin(phase)`` ... ``end(phase)`` around a block."""
        self.begin(phase)
        yield
        self.end(phase)

    def snapshot(self) -> dict:
        """The record's memory fields: process peaks (GPU allocated/reserved, host RSS), each
        phase's peak (``train_peak_*``, ``eval_peak_*``), and the device-neutral
        ``peak_memory_gib`` (process) and ``train_peak_memory_gib`` (training phase: GPU
        allocated, else the host's peak RSS up to the end of training)."""
        snap: dict = {"peak_rss_bytes": peak_rss_bytes()}
        snap["peak_rss_gib"] = round(snap["peak_rss_bytes"] / GIB, 3)
        if self.gpu:
            self._fold()
            snap.update(_peak_fields("peak_", *self.process))
            for phase, (allocated, reserved) in self.phases.items():
                snap.update(_peak_fields(f"{phase}_peak_", allocated, reserved))
        on_gpu = "peak_gpu_allocated_gib" in snap
        snap["peak_memory_gib"] = snap["peak_gpu_allocated_gib"] if on_gpu else snap["peak_rss_gib"]
        snap["peak_memory_kind"] = "gpu_allocated" if on_gpu else "host_rss"
        if "train" in self.phases:
            train = self.phases["train"][0]
            snap["train_peak_memory_gib"] = round(train / GIB, 3)
            snap["train_peak_memory_kind"] = "gpu_allocated_train_phase" if on_gpu else "host_rss_process_so_far"
        return snap


def memory_snapshot(device: str) -> dict:
    """Peak memory of the process so far (no phases): GPU allocated/reserved and host RSS."""
    return PhasePeaks(device).snapshot()


def throughput(measure: MeasureCallback, total_params: int, trainable_params: int, config, peak_flops: float | None) -> dict:
    """tokens/s over the training loop and, where the GPU's peak is known, MFU."""
    seconds = measure.train_seconds
    out = {"train_tokens_seen": measure.tokens, "train_sequences_seen": measure.sequences}
    if not seconds:
        return out
    out["tokens_per_s"] = round(measure.tokens / seconds, 2)
    if measure.steady_start is not None and measure.steady_steps > 0:
        steady = measure.train_end - measure.steady_start
        out["steady_tokens_per_s"] = round(measure.steady_tokens / steady, 2)
        out["steady_step_seconds"] = round(steady / measure.steady_steps, 5)
    if peak_flops and measure.sequences:
        mean_len = measure.tokens / measure.sequences
        per_token = train_flops_per_token(total_params, trainable_params, config.num_hidden_layers, config.hidden_size, mean_len)
        out["mfu"] = round(per_token * measure.tokens / seconds / peak_flops, 5)
        out["mfu_peak_flops"] = peak_flops
    return out


class LossInFlight:
    """A step's loss on its way to the host without waiting for the GPU: reading it at once
    would stall the host until the GPU finished the step, and the GPU would then idle while the
    host launched the next one (small models are launch-bound). Read it a step later."""

    def __init__(self, step: int, loss: torch.Tensor):
        self.step = step
        if loss.is_cuda:
            self.host = loss.detach().to("cpu", non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host, self.event = loss.detach(), None

    def read(self) -> float:
        """The loss, once its copy has arrived."""
        if self.event is not None:
            self.event.synchronize()
        return self.host.item()
