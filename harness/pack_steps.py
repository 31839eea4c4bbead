"""One trial of a pack while it trains (:class:`Member`), and the packed training step.

:func:`packed_step` stacks one micro-batch per active trial, runs the model once over the
stack (each trial's LoRA term on its own rows: :mod:`harness.packed_lora`), sums the trials'
losses (each the causal-LM loss of its own rows, over its own accumulation) for one backward,
and steps each trial whose accumulation is complete: its own clipping, optimizer and scheduler.
:func:`validate` is a trial's validation loss alone on the same model. The precision helpers
give the pack what Lightning's plugins give a run alone.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .head_loss import LabelledPositions, head_on_labels, labelled_losses, labelled_positions
from .measure import LossInFlight
from .packed_lora import Route, Router, TrialRng, hold_trial_constants
from .record import RunRecord
from .schema import RunConfig
from .signals import STOP
from .speed import batch_widths, compile_blocks, own_param_gradients, uses_cuda_graphs


@dataclass
class Member:
    """A trial of a pack: its config, run dir, and (while training) its state."""

    run: RunConfig
    resolved: dict
    run_dir: Path
    user_keys: set[str] | None = None  # the keys its command line set (CPU sizing), None: unsized
    env: dict[str, str] = field(default_factory=dict)  # its loggers' environment (W&B run name, group)
    name: str = ""
    trial: dict = field(default_factory=dict)  # its sweep trial: sweep block, pack log, pack estimate
    record: RunRecord | dict = field(default_factory=dict)  # a RunRecord from prepare_pack on
    total_steps: int = 0
    optimizer: object = None
    scheduler: object = None
    params: list = field(default_factory=list)
    rng: TrialRng | None = None
    batches: object = None
    drawn: int = 0  # micro-batches drawn from ``batches`` (a pack state resumes its data order there)
    pending: list = field(default_factory=list)
    in_flight: LossInFlight | None = None  # its last optimizer step's mean loss, on its way to the host
    train_losses: list = field(default_factory=list)
    val_losses: list = field(default_factory=list)
    step: int = 0
    faulted: bool = False
    tokens: int = 0
    active: bool = False
    left_at: float | None = None


def trial_batches(train: list[dict], micro_batch_size: int, accumulate: int, seed: int, epoch_batches: int,
                  max_epochs: int | None):
    """The trial's micro-batches as Lightning feeds them alone: each epoch a shuffle seeded with
    ``seed + epoch`` (:class:`harness.batches.ResumableShuffle`), ``epoch_batches`` micro-batches
    long; yields ``(examples, ends_an_optimizer_step)`` (the epoch's last micro-batch steps too)."""
    epoch = 0
    while max_epochs is None or epoch < max_epochs:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        for i in range(epoch_batches):
            rows = order[i * micro_batch_size:(i + 1) * micro_batch_size]
            yield [train[j] for j in rows], (i + 1) % accumulate == 0 or i == epoch_batches - 1
        epoch += 1


def convert_module(model: nn.Module, precision: str) -> nn.Module:
    """The model as Lightning's precision plugin converts it before training: ``*-true``
    precisions cast every weight, the adapters' too (peft made them fp32), to that dtype."""
    if precision in ("bf16-true", "16-true"):
        from lightning.pytorch.plugins.precision import HalfPrecision

        return HalfPrecision(precision).convert_module(model)
    return model


def precision_context(precision: str, device: str):
    """The forward context Lightning gives a run of this precision (its own plugins)."""
    if precision in ("bf16-true", "16-true"):
        from lightning.pytorch.plugins.precision import HalfPrecision

        return HalfPrecision(precision).forward_context()
    if precision.endswith("-mixed"):
        from lightning.pytorch.plugins.precision import MixedPrecision

        return MixedPrecision(precision, "cuda" if device == "cuda" else "cpu").forward_context()
    return contextlib.nullcontext()


def causal_loss(model, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The model's own causal-LM loss (transformers' ``loss_function``): mean over the rows'
    label tokens, as the model computes it for a trial's micro-batch alone."""
    base = model.get_base_model()
    return base.loss_function(logits=logits, labels=labels, vocab_size=base.config.vocab_size)


def trial_losses(model, batch: dict, spans: list[tuple[int, int, int]], positions: LabelledPositions | None) -> list[torch.Tensor]:
    """Each trial's causal-LM loss over its rows of the stacked ``batch`` (on the device): the head
    on the labelled ``positions`` alone (:mod:`harness.head_loss`), or, where it must see every
    position (None), from the full logits."""
    from .batches import model_inputs

    if positions is not None:
        return labelled_losses(model, model_inputs(batch), positions)
    logits = model(**model_inputs(batch)).logits
    # Each trial's rows at the stack's width: its labels past its own width are padding (ignored),
    # so the loss is the mean over the same tokens; a narrower slice of several rows would not
    # be contiguous, which the model's loss (a view) refuses in float32.
    return [causal_loss(model, logits[s:e], batch["labels"][s:e]) for s, e, _ in spans]


def _collate(members_batches: list[list[dict]], pad_id: int, widths: tuple[int, ...] = ()) -> tuple[dict, list[tuple[int, int, int]]]:
    """One stacked batch (padded to one of ``widths`` where given), and each trial's rows and own
    padded width (as it collates alone)."""
    from .batches import collate

    flat = [e for batch in members_batches for e in batch]
    spans, start = [], 0
    for batch in members_batches:
        width = int(math.ceil(max(len(e["input_ids"]) for e in batch) / 8) * 8)
        spans.append((start, start + len(batch), width))
        start += len(batch)
    return collate(flat, pad_id, widths), spans


def compiled_routes(trainer) -> tuple[bool, bool]:
    """Whether a pack of this ``trainer`` config trains compiled blocks (``trainer.compile``), and
    whether they replay CUDA graphs (:func:`harness.speed.uses_cuda_graphs`).

    Compiled, each trial's dropout draws from the global stream inside the graph, at the stack's
    width: swapping a trial's own stream in (:class:`TrialRng`) is host code that would break
    every block's graph into pieces. So a compiled pack's masks are not the ones its trials draw
    alone (nor are a compiled trial's alone: the compiler draws its own); without dropout it
    equals them to float rounding. Under CUDA graphs every stacked batch is padded to one of
    ``trainer.graph_widths`` widths (:func:`harness.speed.batch_widths`), as a compiled trial alone
    pads its batches."""
    return trainer.compile, uses_cuda_graphs(trainer)


def compile_pack(model, trials: int, trainer) -> None:
    """The pack's decoder blocks compiled in place (:func:`harness.speed.compile_blocks`, all of
    them sharing one graph per route configuration). A new
    configuration (a trial leaves, an epoch's last micro-batch is shorter, a new width) compiles
    again, so the limit grows with the pack and ``trainer.graph_widths`` instead of falling back
    to eager at torch's 8. The trials' scalings and dropout rates are held as tensors first
    (:func:`harness.packed_lora.hold_trial_constants`): packs that differ only in them compile
    one graph, which a later pack reads from inductor's cache."""
    hold_trial_constants(model)
    compile_blocks(model, trainer.compile_mode)
    config = torch._dynamo.config
    wanted = 64 + 8 * trials * trainer.graph_widths
    config.recompile_limit = max(config.recompile_limit, min(wanted, config.accumulated_recompile_limit))


def packed_step(model, router: Router, active: list[Member], pad_id: int, precision: str, device: str,
                train_started: float) -> int:
    """One packed micro-step: one micro-batch per active trial, stacked; each trial's loss over
    its own rows; one backward; then each trial whose accumulation is complete steps its own
    optimizer and scheduler. Returns the tokens trained."""
    from .batches import to_device

    inject_faults(active)
    drawn = [next(m.batches, None) for m in active]
    for m, got in zip(active, drawn, strict=True):
        if got is None and read_loss(m, train_started):  # its epochs are done
            leave(m, train_started)
    pairs = [(m, got) for m, got in zip(active, drawn, strict=True) if got is not None]
    for m, _ in pairs:
        m.drawn += 1
    if not pairs:
        return 0
    compiled, graphs = compiled_routes(pairs[0][0].run.trainer)
    first_run = pairs[0][0].run
    batch, spans = _collate([got[0] for _, got in pairs], pad_id, batch_widths(first_run.trainer, first_run.data.max_seq_len))
    positions = labelled_positions(batch["labels"], spans).to(device) if head_on_labels(model) else None
    batch = {k: to_device(v, device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    routes = [Route(m.name, s, e, None, None) if compiled else Route(m.name, s, e, m.rng, w)
              for (m, _), (s, e, w) in zip(pairs, spans, strict=True)]
    with precision_context(precision, device), router.route(routes):
        losses = trial_losses(model, batch, spans, positions)
    total = sum(loss / m.run.trainer.accumulate_grad_batches for (m, _), loss in zip(pairs, losses, strict=True))
    # Under CUDA graphs a trial's first micro-batch of an accumulation leaves gradients in the
    # graph's output memory, which the next replay overwrites: those trials get their own copy.
    first = [p for m, (_, steps) in pairs if graphs and not steps and not m.pending for p in m.params]
    total.backward()
    own_param_gradients(first)
    for ((m, (examples, steps)), loss) in zip(pairs, losses, strict=True):
        m.pending.append(loss.detach())
        m.tokens += sum(len(e["input_ids"]) for e in examples)
        if not steps:
            continue
        mean = torch.stack(m.pending).mean()
        m.pending.clear()
        if not read_loss(m, train_started):  # the previous step's loss was not finite: it left the pack
            continue
        m.in_flight = LossInFlight(m.step, mean)
        if m.run.trainer.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(m.params, m.run.trainer.max_grad_norm)
        m.optimizer.step()
        m.scheduler.step()
        m.optimizer.zero_grad(set_to_none=True)
        m.step += 1
        if m.step >= m.total_steps and read_loss(m, train_started):
            leave(m, train_started)
    return batch["num_tokens"]


def drain_loss(m: Member) -> tuple[int, float] | None:
    """The loss in flight, if any, appended to ``train_losses`` when finite; one that is not is
    returned as (optimizer step, loss) and left out (a stopped pack drains: the stop, not the
    loss, ends the trial)."""
    in_flight, m.in_flight = m.in_flight, None
    if in_flight is None:
        return None
    loss = in_flight.read()
    if math.isfinite(loss):
        m.train_losses.append(loss)
        return None
    return in_flight.step, loss


def read_loss(m: Member, train_started: float) -> bool:
    """:func:`drain_loss` in training (the loss was sent one optimizer step earlier, as a trial
    alone sends it): a loss that is not finite means the trial diverged (named by that step, as
    alone) and leaves the pack: False."""
    diverged = drain_loss(m)
    if diverged is None:
        return True
    m.optimizer.zero_grad(set_to_none=True)
    m.record.update(status="diverged", error=f"training loss became {diverged[1]} at optimizer step {diverged[0]}")
    leave(m, train_started)
    return False


def inject_faults(active: list[Member]) -> None:
    """``fault.kind`` in a pack, at the start of the trial's optimizer step ``at_step``: ``oom``
    runs the whole pack out of memory (the driver then splits it); ``nan`` poisons one of the
    trial's own weights, so its loss alone diverges and it leaves the pack; ``sigint`` sends the
    pack's process SIGINT (as Ctrl-C or a time limit would), at that step only, so the trial
    resumed after it goes on."""
    for m in active:
        fault = m.run.fault
        if fault.kind in ("none", "oom_scoring") or m.faulted or m.step < fault.at_step:  # oom_scoring: in scoring
            continue
        if fault.kind == "sigint":
            if m.step == fault.at_step and not m.pending:
                m.faulted = True
                if STOP.signum is None:  # a stop under way is not signalled again (a second SIGINT stops at once)
                    os.kill(os.getpid(), signal.SIGINT)
            continue
        if fault.kind == "oom":
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected by fault.kind=oom at step {m.step} of "
                                              f"{m.run_dir.name}, in a pack)")
        with torch.no_grad():
            m.params[0].fill_(float("nan"))
        m.faulted = True


def leave(m: Member, train_started: float) -> None:
    m.active = False
    m.left_at = time.perf_counter()
    for param in m.params:  # its adapter is done: no gradients for it from here on
        param.grad = None
        param.requires_grad_(False)


@torch.no_grad()
def validate(model, router: Router, m: Member, val: list[dict], pad_id: int, precision: str, device: str) -> float:
    """The trial's validation loss, as Lightning logs it alone: the mean of its micro-batch
    losses weighted by their sizes, in eval mode."""
    from .batches import collate

    was_training = model.training
    model.eval()
    total = weight = 0.0
    b = m.run.trainer.micro_batch_size
    try:
        for i in range(0, len(val), b):
            batch = collate(val[i:i + b], pad_id)
            n = batch["input_ids"].shape[0]
            positions = labelled_positions(batch["labels"], [(0, n, 0)]).to(device) if head_on_labels(model) else None
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            with precision_context(precision, device), router.route([Route(m.name, 0, n)]):
                loss, = trial_losses(model, batch, [(0, n, 0)], positions)
            total += float(loss) * n
            weight += n
    finally:
        model.train(was_training)
    return total / weight

