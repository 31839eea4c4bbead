"""A packed trial's training state: saved when its pack is stopped, loaded by the next pack.

A pack stopped by SIGTERM or SIGINT (preemption, Ctrl-C, a lent machine's time limit) first
finishes the optimizer step each trial is in (its gradient accumulation completes), then saves,
per unfinished trial, what the trial alone owns: its adapter weights, optimizer and scheduler,
dropout stream (:class:`harness.packed_lora.TrialRng`), how many micro-batches it has drawn, and
its losses, in ``pack_state.pt`` in its run dir. Its record says ``interrupted`` with that file
as its ``checkpoint``; the sweep driver runs the trial again in the same folder, and whichever
pack holds it then (its rows, optimizer and stream are its own, so any pack will do) loads the
state and trains on from that step. Eager, the trial's losses and adapter are then those of the
trial never stopped (tests/test_packing.py). A trial that had trained to its end and is
stopped while its pack scores saves its state then (:func:`keep_state`), and its
next pack only validates and scores it. Compiled packs draw dropout from the global stream, so
there a resumed trial is another draw of the same computation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .pack_steps import Member
from .record import PACK_STATE

log = logging.getLogger(__name__)

FORMAT = 1  # the layout below; a state of another layout is not loaded


def state_path(m: Member) -> Path:
    return m.run_dir / PACK_STATE


def save_state(m: Member, val_losses: list | None = None) -> Path:
    """Write the member's state (at an optimizer-step boundary: nothing accumulated) atomically;
    returns its path. A trial saved at its last step (stopped while it was scored) resumes only
    to be validated and scored. ``val_losses``: the ones to save, if not all of the member's."""
    if m.pending:
        raise RuntimeError(f"{m.run_dir}: a pack state is saved between optimizer steps, not within one")
    state = {
        "format": FORMAT, "config": m.resolved, "step": m.step, "drawn": m.drawn, "tokens": m.tokens,
        "faulted": m.faulted, "train_losses": list(m.train_losses),
        "val_losses": list(m.val_losses if val_losses is None else val_losses),
        "params": [p.detach().cpu() for p in m.params],
        "optimizer": m.optimizer.state_dict(), "scheduler": m.scheduler.state_dict(),
        "rng_cpu": m.rng.cpu if m.rng is not None else None,
        "rng_cuda": m.rng.cuda if m.rng is not None else None,
    }
    path = state_path(m)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def load_state(m: Member) -> int | None:
    """Restore the member from its run dir's pack state, if it has one saved with the same
    training config (:func:`harness.module.resume_config_changes`); returns the optimizer step
    it resumes at, or None (no state, or one that does not match: the trial starts over, and a
    warning names why). Call after the member's adapter, optimizer, scheduler, dropout stream
    and batches are built and before it trains."""
    path = state_path(m)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a state that does not load is a fresh start, not a failure
        log.warning("%s: pack state does not load (%s: %s): the trial starts over", path, type(exc).__name__, exc)
        return None
    why = _mismatch(m, state)
    if why:
        log.warning("%s: pack state not used (%s): the trial starts over", path, why)
        return None
    with torch.no_grad():
        for param, saved in zip(m.params, state["params"], strict=True):
            param.copy_(saved)
    m.optimizer.load_state_dict(state["optimizer"])
    m.scheduler.load_state_dict(state["scheduler"])
    if m.rng is not None:  # saved by the same member's build: it had a stream too
        m.rng.cpu, m.rng.cuda = state["rng_cpu"], state["rng_cuda"]
    for _ in range(state["drawn"]):  # its data order goes on where it stopped
        next(m.batches)
    m.step, m.drawn, m.tokens, m.faulted = state["step"], state["drawn"], state["tokens"], state["faulted"]
    m.train_losses, m.val_losses = list(state["train_losses"]), list(state["val_losses"])
    log.info("%s: resumed from its pack state at optimizer step %d", m.run_dir, m.step)
    return m.step


def _mismatch(m: Member, state: dict) -> str | None:
    from .module import resume_config_changes  # Lightning: not on the sweep driver's import path

    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return "another layout"
    changes = resume_config_changes(state["config"], m.resolved)
    if changes:
        return "its config differs in " + ", ".join(sorted(changes)[:5])
    shapes = [tuple(p.shape) for p in m.params], [tuple(t.shape) for t in state["params"]]
    if shapes[0] != shapes[1]:
        return "its adapter's shapes differ"
    if state["step"] > m.total_steps:
        return f"it is at step {state['step']} of {m.total_steps}"
    return None


def saved(m: Member, val_losses: list | None = None) -> bool:
    """:func:`save_state`; False (and a warning why) where it could not be written (a full disk):
    the trial is then interrupted without a state and starts over."""
    try:
        save_state(m, val_losses)
    except Exception as exc:  # noqa: BLE001 - the record says interrupted either way
        log.warning("%s: pack state not saved: %s: %s", m.run_dir, type(exc).__name__, exc)
        return False
    return True


def keep_state(m: Member) -> bool:
    """Whether the member, stopped outside training, has a pack state to go on from: where it
    had trained to its end and was stopped while scored, its state saved now (its next pack then
    only validates and scores it); otherwise the one it was resumed from, if any (still on disk)."""
    if m.optimizer is None or m.step < m.total_steps or m.pending:
        return state_path(m).is_file()
    return saved(m, val_losses=m.val_losses[:1])  # a pack validates before and after training: the latter comes again


def resume_note(m: Member, has_state: bool) -> tuple[str | None, str]:
    """An interrupted member's record ``checkpoint``, and what its error says of going on."""
    if not has_state:
        return None, "its state could not be saved: it starts over"
    return str(state_path(m)), f"its state is saved in {PACK_STATE}, from which its next pack goes on at optimizer step {m.step}"
