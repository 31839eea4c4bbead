"""Packed trials: several LoRA trials of a sweep trained in one process over one frozen base.

A sweep of a small model leaves the GPU mostly idle: each trial pays process start-up, data and
model loading, and launches kernels too small to fill the device. A *pack* trains K compatible
trials together. Compatible (:func:`pack_key`): the same base model, quantization, data and
sequence settings, precision and device; rank, alpha, targets, dropout, rsLoRA, optimizer,
scheduler, learning rate, batch sizes, steps, gradient clipping, eval and seed may differ (the
seed too unless the base is randomly initialised, whose weights the seed draws).

How (the same algebra as Punica/S-LoRA batched LoRA and PLoRA's packed trials, written with
peft's own modules): the base model carries one peft LoRA adapter per trial (``trial0`` ...,
built by peft exactly as :func:`harness.adapters.apply_adapter` builds a single trial's).
One packed micro-step stacks one micro-batch per trial, rows ``[start, stop)`` of trial k; the
frozen base's matmuls run once over the stack, and every ``lora.Linear`` adds trial k's term
``B_k(A_k(dropout_k(x[start:stop]))) * scaling_k`` to trial k's rows only
(:mod:`harness.packed_lora`): the trials of one micro-batch size together, with one batched
matmul pair over their stacked weights (ranks zero-padded to the largest), the others one after
another. Each trial's loss is normalised over its own tokens (the causal-LM loss of its rows),
divided by its own gradient accumulation, and the losses are summed: rows of one trial never mix
with another's (attention, norms and linears are per row), so each adapter gets exactly its own
gradient. Each trial keeps its optimizer, scheduler, data order (its seed), clipping, step
count and dropout random stream (:class:`harness.packed_lora.TrialRng`: the global RNG state is
swapped per trial around each dropout, so the masks are the ones the trial draws alone). A
trial that is done (fewer steps, fewer epochs) or diverged leaves the pack; the rest go on
(:mod:`harness.pack_steps`). With ``trainer.compile`` (the same for every trial of a pack) the
decoder blocks are compiled for the pack (:func:`harness.pack_steps.compile_pack`: a graph per route configuration)
and run compiled in training only (validation and scoring run them eagerly); each trial's dropout
then draws inside the graph from the global stream, seeded with the first trial's seed when
training starts (:func:`harness.pack_steps.compiled_routes`), so only without dropout is a
compiled packed trial its run alone to float rounding.

What a packed trial equals: the same trial run alone by :func:`harness.train.run_training`
(Lightning), to float rounding (tests/test_packing.py measures it). Its record says
``packed: true`` and names its ``pack_members``; memory and runtime fields are the pack's, and
``pack_lora_batched_terms``/``pack_lora_looped_terms`` count the LoRA terms each path computed
in training (``HARNESS_PACK_LORA=looped`` in the environment turns the batched path off).

``python -m harness.packing PACK.json`` runs a pack the sweep driver wrote: ``{"members":
[{"overrides": [...], "run_dir": "...", "trial": {...}}, ...]}``; each member's run dir gets its
own record, which holds its sweep trial's part (``trial``: ``sweep``, ``log``,
``pack_memory_estimate_gib``; :func:`stamp_member`) and, where the driver sized the pack, the
member's dry-run ``memory_estimate`` (a pack on a GPU records it instead of estimating again).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from . import adapters, data, evaluate, measure, models, scoring
from .compose import compose
from .errors import USER_ERRORS
from .pack_finish import finish_member, joint_scores, log_member, pack_eval, trained
from .pack_state import keep_state, load_state, resume_note, saved, state_path
from .pack_steps import (
    Member,
    compile_pack,
    convert_module,
    drain_loss,
    packed_step,
    trial_batches,
    validate,
)
from .packed_lora import (
    BATCHED,
    LOOPED,
    Router,
    TrialParams,
    TrialRng,
    add_adapters,
    attach_router,
    lora_path,
    train_mode,
)
from .record import RunRecord
from .schema import ConfigError, RunConfig
from .speed import compile_work, compile_work_since, eager_blocks, release_compiled

if TYPE_CHECKING:  # harness.train imports Lightning, which the sweep driver (importing pack_key) must not
    from .train import Prepared

log = logging.getLogger(__name__)

ADAPTER_PREFIX = "trial"
PACK_MEASURES = "pack"  # the record's memory and runtime fields are the whole pack's
PACK_FAULTS = ("none", "oom", "nan", "sigint", "oom_scoring")  # a pack injects: its OOM, a trial's NaN, a signal, a trial's OOM in scoring
# Keys of a resolved config that may differ between the trials of one pack (a prefix covers the
# keys under it); every other key must be equal. ``seed`` is added back for a random base.
PACK_FREE_KEYS = ("adapter.r", "adapter.alpha", "adapter.alpha_over_r", "adapter.dropout", "adapter.rslora",
                  "adapter.targets", "adapter.target_modules", "optimizer", "scheduler", "seed", "eval", "logger",
                  "sweep", "trainer.epochs", "trainer.max_steps", "trainer.micro_batch_size",
                  "trainer.global_batch_size", "trainer.max_grad_norm", "trainer.cpu_max_steps",
                  "trainer.cpu_micro_batch_size", "trainer.cpu_global_batch_size", "trainer.save_weights",
                  "trainer.log_every_n_steps", "data.num_workers", "fault")


# -- which trials can share a pack -------------------------------------------------------------

def unpackable_reason(run: RunConfig) -> str | None:
    """Why this run cannot train in a pack (None: it can). Packs train plain LoRA on one device
    in a plain loop: what needs Lightning's machinery or changes the base runs alone."""
    t = run.trainer
    checks = (
        (run.adapter.kind != "lora", f"adapter={run.adapter.kind} (packs train LoRA)"),
        (getattr(run.adapter, "init", "default") not in ("default", "gaussian"),
         f"adapter.init={getattr(run.adapter, 'init', None)} (it changes the base or needs data)"),
        (run.quant.mode == "int8", "quant=int8 (packs train over a 16-bit or 4-bit base)"),
        (t.devices != 1, "trainer.devices > 1"),
        (t.liger_kernels, "trainer.liger_kernels"),
        (t.recompute_lora_dropout, "trainer.recompute_lora_dropout"),
        (t.gradient_checkpointing, "trainer.gradient_checkpointing"),
        (t.val_every_n_steps is not None, "trainer.val_every_n_steps (intermediate validation, pruning)"),
        (t.checkpoint_every_n_steps is not None, "trainer.checkpoint_every_n_steps"),
        (t.resume is not None, "trainer.resume"),
        (t.precision == "16-mixed", "trainer.precision=16-mixed (loss scaling)"),
        (run.optimizer.name == "sophia", "optimizer=sophia (Hessian updates)"),
        (run.fault.kind not in PACK_FAULTS or getattr(run.fault, "above_micro_batch_size", None),
         f"fault.kind={run.fault.kind} (packs inject {', '.join(PACK_FAULTS[1:])})"),
        (run.data.num_workers > 0, "data.num_workers > 0"),
    )
    return next((why for bad, why in checks if bad), None)


def pack_key(resolved: dict) -> str:
    """Trials with equal keys can share a pack: the resolved config less :data:`PACK_FREE_KEYS`
    (the seed kept for a randomly initialised base)."""
    from .module import flat_config

    random_base = (resolved.get("model") or {}).get("init") == "random"
    free = tuple(k for k in PACK_FREE_KEYS if not (k == "seed" and random_base))
    kept = {k: v for k, v in flat_config(resolved).items()
            if not any(k == f or k.startswith(f + ".") for f in free)}
    return json.dumps(kept, sort_keys=True, default=str)



def check_pack(members: list[Member]) -> None:
    """Every member can be packed, and with the others (one line naming what differs)."""
    if not members:
        raise ConfigError("pack: no trials")
    lora_path()  # a bad HARNESS_PACK_LORA is a user error, before any weights load
    pack_eval()  # and a bad HARNESS_PACK_EVAL
    for m in members:
        why = unpackable_reason(m.run)
        if why:
            raise ConfigError(f"pack: {m.run_dir.name} cannot be packed: {why}")
    keys = [pack_key(m.resolved) for m in members]
    if len(set(keys)) > 1:
        first, other = json.loads(keys[0]), json.loads(next(k for k in keys if k != keys[0]))
        differ = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
        raise ConfigError(f"pack: trials differ in {', '.join(differ[:5])}; only compatible trials share a pack")


@dataclass
class PackClock:
    """The packed training's span, tokens and LoRA terms (batched and looped, counted as
    :attr:`harness.packed_lora.Router.terms` counts them), for every member's record (the pack's
    measures)."""

    started: float | None = None
    ended: float | None = None
    tokens: int = 0
    lora_terms: dict | None = None
    compiled_graphs: int | None = None  # trainer.compile: the graphs its blocks compiled in training
    compile_work: dict | None = None  # trainer.compile: what compiling them took (harness.speed.compile_work_since)
    # Seconds from the start of training to the end of the pack's first optimizer step (the device
    # synchronized once, there): with trainer.compile, compiling the blocks and recording their
    # graphs is most of it, which a later step's share of the training time does not pay.
    first_step: float | None = None

    def seconds(self) -> float | None:
        return (self.ended - self.started) if self.started is not None else None


def train_pack(members: list[Member], accelerator: str | None = None) -> list[RunRecord]:
    """Train the members in one process over one base; write and return each one's record.

    The phases of :func:`harness.train.run_training`: :func:`prepare_pack`, :func:`build_pack`,
    the base scores, the packed training (:func:`fit_pack`), each member's validation, saving and
    scoring (:func:`harness.pack_finish.finish_member`), its record. User errors raise before any weights load; later
    failures become each unfinished member's record (:data:`harness.train.OUTCOMES`).
    """
    from .record import write_record
    from .signals import STOP, RunInterrupted
    from .train import loss_fields, outcome

    started = time.perf_counter()
    startup_seconds = measure.process_age_seconds()
    shared = prepare_pack(members, accelerator, startup_seconds)
    peaks = measure.PhasePeaks(shared.device)
    clock = PackClock()
    try:
        model, router = build_pack(members, shared, started)
        for m in members:
            if m.run.eval.tasks and (base := score_pack_base(model, m, shared, peaks)) is not None:
                m.record["eval_base"] = base
        fit_pack(model, router, members, shared, peaks, clock)
        # Stopped between packed steps: the unfinished trials save their states before any scoring.
        unfinished = [m for m in members if m.active] if STOP.signum is not None else []
        states = {m.name: saved(m) for m in unfinished}
        joint = joint_scores(router, members)
        for m in members:
            if trained(m):
                finish_member(m, model, router, shared, peaks, joint)
        name = RunInterrupted(STOP.signum).name if unfinished else None
        for m in unfinished:
            checkpoint, then = resume_note(m, states[m.name])
            m.record.update(status="interrupted", signal=name, checkpoint=checkpoint,
                            error=f"stopped by {name} at optimizer step {m.step} (in a pack); {then}")
    except USER_ERRORS:
        raise
    except (Exception, RunInterrupted) as exc:  # a signal outside training (setup, scoring): the unfinished stop
        ended = outcome(exc)
        if ended["status"] == "interrupted":
            ended.update(error=f"{exc} (in a pack)", checkpoint=None)
        for m in members:
            if m.record["status"] == "failed" and m.record["error"] is None:
                m.record.update(ended)
                if ended["status"] == "interrupted" and keep_state(m):
                    checkpoint, then = resume_note(m, True)
                    m.record.update(checkpoint=checkpoint, error=f"{exc} (in a pack); {then}")
    finally:
        if clock.started is not None and clock.ended is None:
            clock.ended = time.perf_counter()
            peaks.end("train")
        snap = peaks.snapshot()
        pack_seconds = clock.seconds()
        for m in members:
            m.record.update(snap)
            m.record["train_seconds"] = pack_seconds
            m.record["trial_train_seconds"] = (m.left_at - clock.started) if m.left_at and clock.started else None
            m.record["total_seconds"] = time.perf_counter() - started
            m.record["train_tokens"] = m.tokens
            m.record["pack_first_step_seconds"] = clock.first_step
            if clock.lora_terms is not None:  # which path computed the pack's LoRA terms in training
                m.record.update(pack_lora_batched_terms=clock.lora_terms[BATCHED],
                                pack_lora_looped_terms=clock.lora_terms[LOOPED])
            if clock.compiled_graphs is not None:  # trainer.compile: graphs compiled while it trained, and torch's limit
                m.record.update(pack_compiled_graphs=clock.compiled_graphs, pack_compile=clock.compile_work,
                                pack_recompile_limit=torch._dynamo.config.recompile_limit)
            m.record["tokens_per_s"] = round(clock.tokens / pack_seconds, 2) if pack_seconds else None
            m.record.update(loss_fields(m.train_losses, m.val_losses))
            log_member(m)
            stamp_member(m)
            if m.record["status"] not in ("interrupted", "oom"):  # done with it: a re-run (or a half pack) would go on from it
                state_path(m).unlink(missing_ok=True)
            write_record(m.run_dir, m.record)
    return [m.record for m in members]


def stamp_member(m: Member) -> None:
    """A packed sweep trial's own part of its record (:func:`harness.trial.stamp`), and its
    pack's log and memory estimate; nothing for a pack run outside a sweep."""
    from .trial import stamp

    stamp(m.record, m.trial)
    if m.trial.get("log"):
        m.record.pack_log = m.trial["log"]
    if m.trial.get("pack_memory_estimate_gib") is not None:
        m.record.pack_memory_estimate_gib = m.trial["pack_memory_estimate_gib"]


def prepare_pack(members: list[Member], accelerator: str | None, startup_seconds: float) -> Prepared:
    """:func:`harness.train.prepare` for a pack: the device, each member sized for it and checked
    (alone and with the others), the shared data, and each member's opening record. Returns the
    first member's :class:`harness.train.Prepared`, whose device, precision, tokenizer and splits
    are the whole pack's. User errors raise here."""
    from .estimate import estimate_run, resolve_precision
    from .train import Prepared, opening_record, pick_device, plan_steps, sized_run

    device = pick_device(accelerator or members[0].run.trainer.accelerator)
    for i, m in enumerate(members):
        m.name = f"{ADAPTER_PREFIX}{i}"
        m.run, m.resolved, m.record["cpu_sizing"] = sized_run(m.run, m.resolved, device, m.user_keys)
    check_pack(members)
    first = members[0].run
    precision = resolve_precision(first.trainer.precision, device, first.adapter.kind)
    models.check_quant_supported(first.quant, device)
    loaded = data.load_examples(first.data)
    for m in members:
        if m.run.eval.tasks:
            evaluate.check_tasks(m.run.eval.tasks)
        # The driver's, where it sized the pack on a GPU (a compiled shape's trace costs seconds).
        driver_estimate = m.trial.get("memory_estimate") if device == "cuda" else None
        m.record["memory_estimate"] = driver_estimate or estimate_run(m.run, device)["memory_estimate"]
    arch = models.load_config(first.model)
    tokenizer = models.load_tokenizer(first.model)
    models.check_vocab(tokenizer, arch)
    splits, data_stats = data.build_splits(first.data, tokenizer, loaded)
    pack_names = [str(m.run_dir) for m in members]
    prepared = []
    for m in members:
        m.total_steps, note = plan_steps(m.run, data_stats["n_train"], device, m.record["cpu_sizing"])
        prepared.append(Prepared(run=m.run, resolved=m.resolved, cpu_sizing=m.record["cpu_sizing"], device=device,
                                 rank=0, precision=precision, resume_path=None, resume_overrides={},
                                 memory_estimate=m.record["memory_estimate"], arch=arch, tokenizer=tokenizer,
                                 splits=splits, data_stats=data_stats, total_steps=m.total_steps, schedule_note=note))
        m.record = opening_record(prepared[-1], m.run_dir, startup_seconds)
        m.record.update(packed=True, pack_members=pack_names, pack_size=len(members), pack_adapter=m.name,
                        pack_measures=PACK_MEASURES)
        m.run_dir.mkdir(parents=True, exist_ok=True)
    return prepared[0]


def build_pack(members: list[Member], shared: Prepared, started: float) -> tuple[nn.Module, Router]:
    """The base as the first trial builds it alone, one adapter per member, and each member's
    optimizer, scheduler, batches and dropout stream; each record gets its parameter counts."""
    from lightning.pytorch import seed_everything

    from .module import build_optimizer, build_scheduler

    first = members[0].run
    # A random base is the seed's draw, so a pack of a random base holds one seed (pack_key), and
    # the adapters start where it left the RNG.
    seed_everything(first.seed, workers=True, verbose=False)
    before = torch.get_rng_state()
    base = models.build_model(first.model, first.quant, shared.precision, shared.device)
    after = torch.get_rng_state()
    model, after_init = add_adapters(base, [m.run for m in members], [m.name for m in members],
                                     None if torch.equal(before, after) else after)
    router = attach_router(model, batched=lora_path() != LOOPED)
    model = convert_module(model, shared.precision)
    model.train()
    if first.trainer.compile:
        compile_pack(model, len(members), first.trainer)
        eager_blocks(model, True)  # until training: fit_pack turns the compiled blocks on
    trainable_all, total_all = adapters.count_parameters(model)
    train = shared.splits["train"]
    for m, rng in zip(members, after_init, strict=True):
        view = TrialParams(model, m.name)
        m.params = view.parameters()
        own = sum(p.numel() for p in m.params)
        m.record.update(trainable_params=own, total_params=total_all - trainable_all + own)
        # As alone: without scoring, dropout draws on from where the adapter's init left the
        # RNG; with scoring, the run reseeds after scoring the base.
        m.rng = TrialRng(m.run.seed) if m.run.eval.tasks else rng
        m.optimizer = build_optimizer(view, m.run.optimizer)
        m.scheduler = build_scheduler(m.optimizer, m.run.scheduler, m.total_steps)
        t = m.run.trainer
        epoch_batches = min(math.ceil(len(train) / t.micro_batch_size), m.total_steps * t.accumulate_grad_batches)
        m.batches = trial_batches(train, t.micro_batch_size, t.accumulate_grad_batches, m.run.seed,
                                  epoch_batches, None if t.max_steps is not None else t.epochs)
        m.record["setup_seconds"] = time.perf_counter() - started
    return model, router


def score_pack_base(model, m: Member, shared: Prepared, peaks: measure.PhasePeaks) -> dict | None:
    """The member's base scores (:func:`harness.scoring.base_scores`, cached), its adapter the
    identity before training; None where it is not scored in-process."""
    if evaluate.HELDOUT_TASK in m.run.eval.tasks:
        evaluate.write_heldout(shared.splits["test"], shared.tokenizer, m.run_dir / evaluate.HELDOUT_FILE)
    if not scoring.scores_in_process(m.run):
        return None
    model.set_adapter(m.name)
    with peaks.phase("eval"):
        return scoring.base_scores(model, shared.tokenizer, m.run, shared.precision, shared.device, m.run_dir)


def fit_pack(model, router: Router, members: list[Member], shared: Prepared, peaks: measure.PhasePeaks, clock: PackClock) -> None:
    """Every member's first validation, then packed steps until every member has left the pack
    (done or diverged) or a signal came (SIGTERM/SIGINT: the packed step under way finishes)."""
    from lightning.pytorch import seed_everything
    from torch._dynamo.utils import counters

    from .signals import STOP

    pad_id = shared.tokenizer.pad_token_id
    train_mode(model, [m.name for m in members])
    for m in members:
        resumed_at = load_state(m)  # a trial its last pack stopped goes on from there
        if resumed_at is not None:
            m.record.update(resumed_from=str(state_path(m)), pack_resumed_at_step=resumed_at)
        elif shared.splits["val"]:
            m.val_losses.append(validate(model, router, m, shared.splits["val"], pad_id, shared.precision, shared.device))
    STOP.install(defer=True)
    peaks.begin("train")
    clock.started = time.perf_counter()
    for m in members:
        m.active = m.step < m.total_steps  # a trial resumed at its end only validates and scores
    before = dict(router.terms)
    compiled = members[0].run.trainer.compile
    if compiled:
        # Compiled blocks draw dropout from the global stream: seed it here, so training does not
        # depend on what scoring the base did to it (lm-eval reseeds; a cached score does not).
        seed_everything(members[0].run.seed, workers=True, verbose=False)
    graphs_before, work_before = counters["stats"]["unique_graphs"], compile_work() if compiled else None
    eager_blocks(model, False)  # compiled blocks (trainer.compile) run compiled in training only
    steps_before = [m.step for m in members]
    try:
        while any(m.active for m in members) and STOP.signum is None:
            clock.tokens += packed_step(model, router, [m for m in members if m.active], pad_id, shared.precision,
                                        shared.device, clock.started)
            if clock.first_step is None and any(m.step > s for m, s in zip(members, steps_before, strict=True)):
                if shared.device == "cuda":
                    torch.cuda.synchronize()
                clock.first_step = time.perf_counter() - clock.started
        # Stopped by a signal: the trials within an optimizer step finish it, so that each
        # stops where its state saves and resumes exactly (harness.pack_state).
        while within := [m for m in members if m.active and m.pending]:
            clock.tokens += packed_step(model, router, within, pad_id, shared.precision, shared.device, clock.started)
    finally:
        if compiled:  # this process's new graphs (torch warns itself if a block hits its recompile limit)
            clock.compiled_graphs = counters["stats"]["unique_graphs"] - graphs_before
            clock.compile_work = compile_work_since(work_before)
        # Stopped (a signal, out of memory, a crash): each trial's last step loss is still in
        # flight. Kept when finite, as a run alone keeps it; the stop, not the loss, ends it.
        for m in members:
            with contextlib.suppress(Exception):
                drain_loss(m)
        release_compiled(model)  # the pack trains no more: its graphs' memory to scoring
    clock.ended = time.perf_counter()
    if not compiled:  # compiled blocks do not count their terms
        clock.lora_terms = {path: router.terms[path] - before[path] for path in before}
    peaks.end("train")
    STOP.defer = False


# -- the pack process -----------------------------------------------------------------------------

def members_from_spec(spec: dict) -> list[Member]:
    """The members a pack file lists: ``{"members": [{"overrides": [...], "run_dir": ...}]}``."""
    if not isinstance(spec, dict) or not isinstance(spec.get("members"), list) or not spec["members"]:
        raise ConfigError("pack file: needs {\"members\": [{\"overrides\": [...], \"run_dir\": \"...\"}, ...]}")
    members = []
    for i, item in enumerate(spec["members"]):
        if not isinstance(item, dict) or not isinstance(item.get("overrides"), list) or not item.get("run_dir"):
            raise ConfigError(f"pack file: members[{i}] needs overrides (a list) and run_dir")
        run, resolved = compose([str(o) for o in item["overrides"]])
        keys = {str(o).lstrip("+~").split("=", 1)[0].strip() for o in item["overrides"]}
        env = {str(k): str(v) for k, v in (item.get("env") or {}).items()}
        members.append(Member(run=run, resolved=resolved, run_dir=Path(item["run_dir"]), user_keys=keys, env=env,
                              trial=item.get("trial") or {}))
    return members


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.packing PACK.json``: train the pack, one record per member. Exit 0
    when every member ended ok, 1 otherwise, 2 (one ``error:`` line) on bad input."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    if len(argv) != 1:
        print("error: usage: python -m harness.packing PACK.json", file=sys.stderr)
        return 2
    try:
        spec = json.loads(Path(argv[0]).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: pack file {argv[0]}: {exc}", file=sys.stderr)
        return 2
    from .signals import STOP

    STOP.install()  # SIGTERM/SIGINT: the pack stops after its packed step under way, records written
    try:
        records = train_pack(members_from_spec(spec))
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for r in records:
        log.info("%s: %s train_loss_last=%s", r["run_dir"], r["status"], r.get("train_loss_last"))
    if STOP.signum is not None:
        return 128 + STOP.signum
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
