"""A pack's trials after the packed training (:func:`harness.packing.train_pack`): each one's
last validation, adapter, scores (alone, or with the pack's other trials of the same eval
settings: :func:`joint_scores`) and loggers, as its run alone would finish."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import measure, scoring
from .errors import USER_ERRORS
from .pack_steps import Member, validate
from .packed_lora import Router
from .schema import ConfigError

if TYPE_CHECKING:  # harness.train imports Lightning, which the sweep driver (importing harness.packing) must not
    from .train import Prepared

log = logging.getLogger(__name__)

# How a pack's trials are scored after training (the A/B switch of this process's packs): each
# trial's lm-eval requests served for all of them at once (harness.pack_scoring), or one trial
# after another.
PACK_EVAL_ENV, JOINT, ALONE = "HARNESS_PACK_EVAL", "joint", "alone"


def log_member(m: Member) -> None:
    """The trial's loggers (``logger=``: CSV, W&B), one trial after another, each given the
    trial's curves and its record's summary as its own run would log them. A logger failure
    never costs the record (see :mod:`harness.tracking`)."""
    from . import tracking

    saved = {key: os.environ.get(key) for key in m.env}
    os.environ.update(m.env)
    try:
        loggers = tracking.build_loggers(m.run.logger, m.run_dir, m.resolved)
        for logger in loggers:
            for step, loss in enumerate(m.train_losses):
                logger.log_metrics({"train_loss": loss}, step=step)
            for step, loss in zip((0, max(len(m.train_losses) - 1, 0)), m.val_losses, strict=False):
                logger.log_metrics({"val_loss": loss}, step=step)
            logger.save()
        tracking.finish_loggers(loggers, m.record)
        for logger in loggers:
            logger.finalize("success" if m.record["status"] == "ok" else "failed")
    except Exception as exc:  # noqa: BLE001 - the record is written next either way
        log.warning("%s: loggers not written: %s: %s", m.run_dir, type(exc).__name__, str(exc).splitlines()[0][:200])
    finally:
        if "wandb" in sys.modules:  # W&B reads its environment once per process setup: the next trial sets it up anew
            with contextlib.suppress(Exception):
                sys.modules["wandb"].teardown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def trained(m: Member) -> bool:
    """Whether the trial trained to its end (not diverged, not stopped) and is not finished yet."""
    return m.record["status"] == "failed" and not m.active


def pack_eval() -> str:
    """How :data:`PACK_EVAL_ENV` says the packs of this process score their trials (:data:`JOINT`
    unless set)."""
    path = os.environ.get(PACK_EVAL_ENV) or JOINT
    if path not in (JOINT, ALONE):
        raise ConfigError(f"{PACK_EVAL_ENV}={path}: choose {JOINT} or {ALONE}")
    return path


def joint_scores(router: Router, members: list[Member]) -> dict:
    """The trials scored together (:mod:`harness.pack_scoring`), by name: groups of two or more
    with equal eval settings (hence the same lm-eval requests) that trained to their end and
    score in-process on a 16-bit base; none where :data:`PACK_EVAL_ENV` says ``alone``."""
    if pack_eval() == ALONE:
        return {}
    from .pack_scoring import JointScores

    groups: dict[str, list[str]] = {}
    for m in members:
        if trained(m) and m.run.eval.tasks and not scoring.scores_merged(m.run):
            groups.setdefault(json.dumps(dataclasses.asdict(m.run.eval), sort_keys=True, default=str), []).append(m.name)
    joint = {}
    for names in groups.values():
        if len(names) > 1:
            shared = JointScores(router, names)
            joint.update(dict.fromkeys(names, shared))
    return joint


def finish_member(m: Member, model, router: Router, shared: Prepared, peaks: measure.PhasePeaks,
                   joint: dict | None = None) -> None:
    """After training: the trial's last validation, its adapter saved, its scores (with the
    other trials of its :class:`harness.pack_scoring.JointScores` in ``joint``, where it has one)."""
    from .train import outcome

    splits, tokenizer, precision, device = shared.splits, shared.tokenizer, shared.precision, shared.device
    try:
        if splits["val"]:
            m.val_losses.append(validate(model, router, m, splits["val"], tokenizer.pad_token_id, precision, device))
        if m.run.trainer.save_weights:
            save_adapter(model, m, tokenizer)
        if m.run.eval.tasks:
            eval_started = time.perf_counter()
            model.set_adapter(m.name)
            shared_scores = (joint or {}).get(m.name)
            with peaks.phase("eval"):
                m.record.update(scoring.score_trained(model, tokenizer, m.run, precision, device, m.run_dir,
                                                      m.record.get("eval_base"), m.record["adapter_path"],
                                                      shared_scores.lm(m.name) if shared_scores else None))
            together = shared_scores and m.name in shared_scores.served and m.name not in shared_scores.alone
            m.record["pack_eval"] = JOINT if together else ALONE
            if together:  # the stack's limit when scoring ended (harness.record.RunRecord.pack_eval_stack)
                m.record["pack_eval_stack"] = shared_scores.stack
            m.record["eval_seconds"] = time.perf_counter() - eval_started
        m.record["status"] = "ok"
    except USER_ERRORS:
        raise
    except Exception as exc:
        m.record.update(outcome(exc))


def save_adapter(model, m: Member, tokenizer) -> None:
    """The trial's adapter in PEFT format in ``adapter/`` (loadable as the adapter ``default``,
    like a trial's saved alone)."""
    import shutil
    import tempfile

    target = m.run_dir / "adapter"
    with tempfile.TemporaryDirectory(dir=m.run_dir) as tmp:
        model.save_pretrained(tmp, selected_adapters=[m.name])
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(Path(tmp) / m.name), target)
    tokenizer.save_pretrained(target)
    m.record["adapter_path"] = str(target)
