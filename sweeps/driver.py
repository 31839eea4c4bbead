"""The sweep driver: Optuna ask/tell over trials, each trial one run of ``python -m harness.run``.

``python -m harness.run +sweep=NAME [overrides]`` lands here. The driver plans the sweep
(space, overrides, scale), validates every configuration it can before anything runs, opens
or joins the study, then runs workers that ask for a trial, launch its run(s), read the
record(s) and tell Optuna. Failures are data: an oom, diverged, pruned, failed or skipped run
is a record and a finished trial, and the sweep goes on. Running the same command again
resumes: finished trials are kept, trials whose driver died are run again.

Each record has one writer. A trial's run writes its own, ``sweep`` block included (the driver
hands it over in ``HARNESS_TRIAL``); the driver reads it and never writes it again. The driver
writes only the record of a trial whose process left none (skipped over the memory budget,
killed, refused its config): :func:`left_no_record`.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import optuna
from optuna.trial import TrialState

from harness.compose import compose as compose_overrides  # as the CLI composes; tests spy on it
from harness.paths import atomic_write
from harness.record import RECORD_NAME, RunRecord, SweepInfo, read_record, read_tail, write_record
from harness.schema import RUNTIME_METRICS, ConfigError, RunConfig, SweepConfig
from harness.trial import TRIAL_ENV

from . import study as study_lib
from .launch import LocalLauncher, SubmititLauncher
from .space import (
    Axis,
    grid_points,
    grid_space,
    merge_overrides,
    override_key,
    parse_space,
    point_key,
    trial_overrides,
)

log = logging.getLogger("harness.sweep")

RESULTS_NAME = "results.csv"
PACK_OOM_RECORD = "pack_oom_record.json"  # a run's record from a pack that ran out of memory (then split)
PLAN_NAME = "sweep.json"
# Numeric record fields an objective can name (harness.train writes them), the nested groups
# whose leaves are numbers, and the suffixes of the measured ones (memory and time phases).
RECORD_METRICS = ("val_loss_last", "val_loss_best", "val_loss_first", "train_loss_last", "train_loss_best",
                  "train_loss_first", "peak_memory_gib", "train_seconds", "tokens_per_s", "mfu", "total_seconds",
                  "eval_seconds", "setup_seconds", "trainable_params", "total_params", "optimizer_steps")
RECORD_GROUPS = ("memory_estimate", "data")
METRIC_SUFFIXES = ("_gib", "_gb", "_bytes", "_seconds", "_tokens_per_s")
TABLE_COLUMNS = ("status", "peak_memory_gib", "train_seconds", "tokens_per_s", "val_loss_last")


MAX_YIELDS_WITHOUT_PROGRESS = 20
# How long a stopping driver waits for its running trials to checkpoint and record it.
STOP_GRACE_SECONDS = 120.0


class SweepStalled(RuntimeError):
    """The driver kept drawing configurations that were taken and ran none: a bug, not a sweep."""


@dataclass
class SweepPlan:
    """Everything a driver needs, resolved once: scale applied, overrides merged, validated."""

    cfg: SweepConfig
    axes: list[Axis]
    base_overrides: list[str]
    seeds: list[int | None]
    planned: int
    grid: list[dict] | None
    sweep_dir: Path
    storage_url: str
    study_name: str
    exclusive_gpu: bool
    trials_per_gpu: int
    slots: list[str | None] = field(default_factory=list)  # CUDA_VISIBLE_DEVICES per worker
    pack: bool = False  # compatible trials train together (harness.packing), up to pack_size runs
    pack_size: int = 1

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.cfg.objectives]

    def signature(self) -> dict:
        """What makes two invocations the same sweep (checked on resume)."""
        return {"space": {a.key: a.values or [a.low, a.high, a.log, a.step] for a in self.axes},
                "objectives": [[o.metric, o.direction] for o in self.cfg.objectives],
                "overrides": self.base_overrides, "seeds": self.seeds, "sampler": self.cfg.sampler,
                "planned": self.planned}


def plan_sweep(cfg: SweepConfig, user_overrides: list[str], sweep_dir: Path) -> SweepPlan:
    """Apply the scale, parse the space, merge overrides and validate every configuration
    that can be listed (all grid points; both ends of every range) before anything runs."""
    space = dict(cfg.space)
    extra: list[str] = []
    n_trials = cfg.n_trials
    seeds: list[int | None] = list(cfg.seeds) or [None]
    if cfg.scale == "smoke":
        space.update(cfg.smoke.get("space") or {})
        extra = list(cfg.smoke.get("overrides") or [])
        n_trials = cfg.smoke.get("n_trials", n_trials)
        seeds = list(cfg.smoke.get("seeds") or seeds)
    axes = parse_space(space)
    check_sweep_claims(cfg)
    swept = {a.key for a in axes} | {override_key(o) for a in axes for b in a.bundles.values() for o in b}
    for override in user_overrides:
        if override_key(override) in swept:
            raise ConfigError(f"{override_key(override)}: is swept by sweep {cfg.name}; drop {override!r} from the command")
    base = merge_overrides(list(cfg.overrides), extra, user_overrides)
    if "seed" in swept and cfg.seeds:
        raise ConfigError(f"sweep.seeds: sweep {cfg.name} also sweeps seed in sweep.space; use one of the two "
                          "(sweep.seeds repeats every configuration per seed)")
    axes = [dedupe_by_effect(a, base) for a in axes]
    if cfg.sampler == "grid":
        grid_space(axes)  # raises for ranges
        grid = grid_points(axes)
        planned = min(n_trials, len(grid)) if n_trials else len(grid)
        probes = grid
    else:
        grid = None
        planned = int(n_trials)
        probes = [{a.key: a.probe_values()[i % len(a.probe_values())] for a in axes}
                  for i in range(max(len(a.probe_values()) for a in axes))]
    runs = []
    for params in probes:
        try:
            runs.append(compose_overrides(merge_overrides(base, trial_overrides(axes, params)))[0])
        except ConfigError as exc:
            where = ", ".join(f"{k}={v}" for k, v in params.items())
            raise ConfigError(f"{exc} (in sweep {cfg.name}, at {where})") from None
    first = runs[0]
    check_inputs(first, cfg)
    exclusive = cfg.exclusive_gpu if cfg.exclusive_gpu is not None else cfg.measures_runtime
    return SweepPlan(cfg=cfg, axes=axes, base_overrides=base, seeds=seeds, planned=planned, grid=grid,
                     sweep_dir=sweep_dir, storage_url=study_lib.storage_url(cfg.storage, sweep_dir),
                     study_name=cfg.study_name or cfg.name, exclusive_gpu=exclusive,
                     trials_per_gpu=1 if exclusive else cfg.trials_per_gpu,
                     pack=packs(cfg, axes, base, exclusive), pack_size=cfg.pack_size)


def systems_reason(cfg: SweepConfig, axes: list[Axis], base: list[str], exclusive: bool) -> str | None:
    """Why a sweep measures the system (memory, runtime, quantization), whose trials must each
    have the process to themselves; None for a quality sweep."""
    measured = [o.metric for o in cfg.objectives if o.metric.split(".")[-1] in RUNTIME_METRICS
                or o.metric.endswith(METRIC_SUFFIXES) or o.metric in ("peak_memory_gib", "mfu")]
    if measured:
        return f"its objective {measured[0]} measures the system"
    if exclusive:
        return "its trials keep a GPU to themselves (sweep.exclusive_gpu)"
    overrides = base + [o for a in axes for b in a.bundles.values() for o in b]
    if any(a.key.split(".")[0] == "quant" for a in axes) or any(
            override_key(o).split(".")[0] == "quant" and not o.endswith("=none") for o in overrides):
        return "it measures quantization"
    return None


def packs(cfg: SweepConfig, axes: list[Axis], base: list[str], exclusive: bool) -> bool:
    """Whether the sweep trains its compatible trials in packs (``sweep.pack``): ``auto`` for a
    quality sweep without pruning; never for a systems sweep (``true`` there is refused)."""
    if cfg.pack == "false":
        return False
    why = systems_reason(cfg, axes, base, exclusive)
    if cfg.pack == "true":
        if why:
            raise ConfigError(f"sweep.pack=true: sweep {cfg.name} cannot pack: {why}, so each trial runs alone "
                              "(sweep.pack=false)")
        if cfg.pruner != "none":
            raise ConfigError("sweep.pack=true: packed trials report no intermediate values; use sweep.pruner=none")
        return True
    return why is None and cfg.pruner == "none"


def check_sweep_claims(cfg: SweepConfig) -> None:
    """The findings report's claims about this sweep name axes and levels of its full design
    (not the smoke subset): a renamed label fails here, not as a silent 'not measured'."""
    from harness.report.claims import check_claims

    try:
        check_claims(cfg.name, {a.key: list(a.values) for a in parse_space(dict(cfg.space))})
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def dedupe_by_effect(axis: Axis, base: list[str]) -> Axis:
    """The axis without values that configure the same run as an earlier value (``[0, 0.0]``:
    Hydra makes both 0 for an int key): grid points that are one configuration would otherwise
    each wait for the other, and the sweep would never finish."""
    if axis.kind != "categorical" or len(axis.values) < 2:
        return axis
    seen: dict[str, object] = {}
    kept = []
    for value in axis.values:
        try:
            _, resolved = compose_overrides(merge_overrides(base, axis.overrides(value)))
        except ConfigError:
            kept.append(value)  # invalid: reported with its grid point below
            continue
        effect = json.dumps(resolved, sort_keys=True, default=str)
        if effect in seen:
            log.warning("sweep.space.%s: %r configures the same run as %r; swept once", axis.key, value, seen[effect])
            continue
        seen[effect] = value
        kept.append(value)
    return replace(axis, values=kept)


def check_objectives(cfg: SweepConfig) -> None:
    """Every objective names a metric a run record has (eval metrics are checked against the
    scored tasks in :func:`check_inputs`)."""
    for objective in cfg.objectives:
        metric = objective.metric
        top = metric.split(".")[0]
        if top in ("eval", "eval_base", "eval_delta", "eval_quantized") or top in RECORD_GROUPS:
            continue
        if metric in RECORD_METRICS or metric.endswith(METRIC_SUFFIXES):
            continue
        guess = difflib.get_close_matches(metric, RECORD_METRICS, n=1)
        raise ConfigError(f"sweep.objectives: {metric!r} is not a metric of a run record"
                          + (f"; did you mean {guess[0]}?" if guess else f" (e.g. {', '.join(RECORD_METRICS[:6])})"))


def check_inputs(run: RunConfig, cfg: SweepConfig) -> None:
    """The cheap checks of a single run, once for the sweep: data parses, eval tasks exist,
    objectives name record metrics the runs will have."""
    from harness import data, evaluate

    check_objectives(cfg)
    for objective in cfg.objectives:
        parts = objective.metric.split(".")
        if parts[0] in ("eval", "eval_base", "eval_delta"):
            if len(parts) != 3:
                raise ConfigError(f"sweep.objectives: {objective.metric!r} must be {parts[0]}.TASK.METRIC")
            if parts[1] not in run.eval.tasks:
                raise ConfigError(f"sweep.objectives: {objective.metric!r} needs task {parts[1]} in eval.tasks "
                                  f"(the runs score: {', '.join(run.eval.tasks) or 'nothing, eval=none'})")
    if cfg.pruner != "none" and run.trainer.val_every_n_steps is None:
        raise ConfigError("sweep.pruner: pruning needs intermediate val losses; set trainer.val_every_n_steps")
    data.load_examples(run.data)
    if run.eval.tasks:
        evaluate.check_tasks(run.eval.tasks)


def metric_value(record: Mapping, metric: str) -> float | None:
    """A record metric by dotted path; lm-eval entries give their ``value``."""
    node = record
    for part in metric.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if isinstance(node, Mapping):
        node = node.get("value")
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node):
        return None
    return float(node)


def cap_to_cores(slots: list[str | None], runs_per_trial: int, cores: int | None = None) -> list[str | None]:
    """At most as many workers as keep each of their runs (a trial's seeds side by side) on a CPU
    core of its own, spread over the GPUs. Each run's Python feeds its GPU from one core: on an
    H200 with 16 cores, 33 runs at once each slowed to half speed and few finished in time."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    most = max(1, cores // runs_per_trial)
    if len(slots) <= most:
        return slots
    log.info("%d worker(s) x %d seeds side by side would exceed the %d CPU cores: using %d worker(s) "
             "(sweep.workers sets the number)", len(slots), runs_per_trial, cores, most)
    # The k-th worker of every GPU before the (k+1)-th of any: fewer workers stay spread over the GPUs.
    order = sorted(range(len(slots)), key=lambda i: (slots[:i].count(slots[i]), i))
    return [slots[i] for i in order[:most]]


def gpu_slots(workers: int | None, trials_per_gpu: int, exclusive: bool) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES for each worker: trials_per_gpu workers share each GPU."""
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = [g for g in visible.split(",") if g] if visible else [str(i) for i in range(torch.cuda.device_count())]
    if not gpus:
        return [None] * (workers or 1)
    n = workers or len(gpus) * trials_per_gpu
    capacity = len(gpus) * trials_per_gpu
    if n > capacity:
        log.warning("sweep.workers=%d > %d GPU(s) x %d trial(s) per GPU%s: using %d workers", n, len(gpus),
                    trials_per_gpu, " (runtime is measured, so trials keep a GPU to themselves)" if exclusive else "", capacity)
        n = capacity
    return [gpus[i // trials_per_gpu] for i in range(n)]


@dataclass
class PackEntry:
    """One run (a trial at one seed) of a batch the driver may pack."""

    trial: optuna.Trial
    params: dict
    seed: int | None
    overrides: list[str]
    run_dir: Path
    run: RunConfig | None = None
    resolved: dict | None = None
    sweep: dict | None = None  # its record's sweep block (SweepInfo.to_json())
    record: RunRecord | None = None
    estimate: dict | None = None  # its dry-run memory estimate (with sweep.gpu_memory_budget)
    pack_estimate_gib: float | None = None  # its pack's


def pack_chunks(entries: list, size: int, budget_gib: float | None = None) -> list[list]:
    """Compatible runs cut into packs of at most ``size`` runs and, with a memory budget, of at
    most ``budget_gib`` by the dry-run estimates: the frozen base counted once, each run's
    adapter, gradients, optimizer state and activations added (each run's ``estimate``). Each
    run's ``pack_estimate_gib`` is set to its pack's estimate."""
    chunks: list[list] = []
    current: list = []
    held = 0
    for entry in entries:
        est = entry.estimate
        own = 0 if est is None else est["total_bytes"] - est["weights_bytes"]
        full = False
        if current:
            full = len(current) >= size or (budget_gib is not None and est is not None
                                            and (held + own) / 2**30 > budget_gib)
        if full:
            chunks.append(current)
            current, held = [], 0
        held += (0 if est is None else est["total_bytes"]) if not current else own
        current.append(entry)
        if budget_gib is not None:
            for member in current:
                member.pack_estimate_gib = round(held / 2**30, 3)
    if current:
        chunks.append(current)
    return chunks


class Driver:
    """Runs one driver's workers against the shared study."""

    def __init__(self, plan: SweepPlan, study: optuna.Study, launcher, slots: list[str | None]):
        self.plan, self.study, self.launcher, self.slots = plan, study, launcher, slots
        self.stop = threading.Event()
        self.lock = threading.Lock()
        # Ask, sample and the duplicate check run one worker at a time: two workers that sample
        # one grid point between each other's checks would otherwise both run it.
        self.ask_lock = threading.Lock()
        self.bar = None
        self.errors: list[BaseException] = []
        self.yielded = 0  # duplicate trials since the last trial that ran (all workers)
        self.done: list[threading.Event] = []  # one per worker, set when it ends
        # A trial's seeds run side by side (sweep.seeds_together), except where runtime is
        # measured (each run keeps its GPU to itself) or packs take the seeds instead.
        wanted = plan.cfg.seeds_together == "true" or (plan.cfg.seeds_together == "auto" and any(slots)
                                                        and plan.cfg.pruner == "none")
        self.seeds_together = wanted and len(plan.seeds) > 1 and not plan.exclusive_gpu and not plan.pack
        if self.seeds_together and plan.cfg.workers is None:
            self.slots = slots = cap_to_cores(slots, len(plan.seeds))
        self.concurrent_runs = len(slots) * (len(plan.seeds) if self.seeds_together else 1)

    # -- the worker loop ------------------------------------------------------------------
    def worker(self, slot: str | None) -> None:
        done = threading.Event()
        with self.lock:
            self.done.append(done)
        try:
            self._work(slot)
        finally:
            done.set()

    def _work(self, slot: str | None) -> None:
        retry = study_lib.with_retry
        wait = self.plan.cfg.storage_retry_seconds
        try:
            while not self.stop.is_set():
                p = retry(self._poll, "polling the study", wait)
                self._show(p)
                if p.finished:
                    return
                if p.to_start == 0 and p.waiting == 0:
                    # Everything is started; wait, so that a trial whose driver dies is run again.
                    self.stop.wait(min(self.plan.cfg.heartbeat_seconds, 5.0))
                    continue
                got = self._ask()
                if got is None:
                    continue
                if self.plan.pack and "trial_dir" not in got[0].user_attrs:
                    batch, reruns = self._fill_pack(got)
                    self.run_packed(batch, slot, waiting=[t for t, _ in reruns])
                    for rerun in reruns:
                        self.run_trial(*rerun, slot)
                else:
                    self.run_trial(*got, slot)
        except BaseException as exc:  # surfaced by the main thread
            self.errors.append(exc)
            self.stop.set()

    def _ask(self) -> tuple[optuna.Trial, dict] | None:
        """A new trial and its params, marked running; None when its configuration was taken."""
        retry = study_lib.with_retry
        wait = self.plan.cfg.storage_retry_seconds
        with self.ask_lock:
            trial = retry(self.study.ask, "asking for a trial", wait)
            retry(partial(study_lib.mark_running, self.study, trial), "starting a trial", wait)
            params = retry(partial(self._suggest, trial), "sampling a trial", wait)
            duplicate = self.plan.grid is not None and retry(partial(self._yield_duplicate, trial, params),
                                                             "checking for duplicates", wait)
        if duplicate:
            self.yielded += 1
            if self.yielded > MAX_YIELDS_WITHOUT_PROGRESS + 2 * self.plan.planned:
                raise SweepStalled(f"sweep {self.plan.cfg.name}: {self.yielded} trials in a row found their "
                                   "configuration taken and none ran; stopped (is a configuration listed twice?)")
            return None
        self.yielded = 0
        return trial, params

    def _fill_pack(self, first: tuple[optuna.Trial, dict]) -> tuple[list, list]:
        """``first`` and as many more fresh trials as fit a pack (``sweep.pack_size`` runs, each
        trial one run per seed), and the re-runs of interrupted trials drawn meanwhile: those run
        alone after the pack, from their checkpoints."""
        batch, reruns = [first], []
        per_trial = len(self.plan.seeds)
        while (len(batch) + 1) * per_trial <= self.plan.pack_size and not self.stop.is_set():
            p = study_lib.with_retry(self._poll, "polling the study", self.plan.cfg.storage_retry_seconds)
            if p.to_start == 0 and p.waiting == 0:
                break
            got = self._ask()
            if got is None:
                continue
            if "trial_dir" in got[0].user_attrs:
                reruns.append(got)
                break
            batch.append(got)
        return batch, reruns

    def _suggest(self, trial: optuna.Trial) -> dict:
        return {a.key: suggest(trial, a) for a in self.plan.axes}

    def _poll(self) -> study_lib.Progress:
        study_lib.reap_stale(self.study, self.plan.cfg.stale_after_seconds)
        return study_lib.progress(self.study, self.plan.planned, by_point=self.plan.grid is not None)

    def _yield_duplicate(self, trial: optuna.Trial, params: dict) -> bool:
        holder = study_lib.is_duplicate(self.study, trial, params)
        if holder is None:
            return False
        trial.set_user_attr("status", "duplicate")
        trial.set_user_attr("duplicate_of", holder)
        self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        # Point the next ask at a configuration nobody has taken yet, if there is one.
        status = study_lib.status_of(self.study)
        taken = {point_key(study_lib.trial_params(t)) for t in self.study.get_trials(deepcopy=False)
                 if status(t) not in study_lib.UNCOUNTED}
        missing = [g for g in self.plan.grid if point_key(g) not in taken]
        if missing:
            self.study.enqueue_trial(missing[0])
        return True

    def _show(self, p: study_lib.Progress) -> None:
        if self.bar is not None:
            with self.lock:
                self.bar.n = p.done
                self.bar.set_postfix(running=p.running, refresh=False)
                self.bar.refresh()

    # -- one trial ------------------------------------------------------------------------
    def run_trial(self, trial: optuna.Trial, params: dict, slot: str | None) -> None:
        plan = self.plan
        # A re-run of a lost or interrupted trial runs in that trial's folder and resumes from
        # the checkpoint its run left there (a fresh start where there is none).
        rerun = "trial_dir" in trial.user_attrs
        # A failed trial run again (sweep.retry_failed) starts over: only ok seeds are kept.
        fresh = bool(trial.user_attrs.get("fresh"))
        trial_dir = plan.sweep_dir / "trials" / study_lib.trial_dir_name(trial)
        overrides = merge_overrides(plan.base_overrides, trial_overrides(plan.axes, params))

        def seed_dir(seed) -> Path:
            return trial_dir if len(plan.seeds) == 1 else trial_dir / f"seed_{seed}"

        if fresh:  # every failed seed set aside before any runs: a later re-run never keeps one
            for seed in plan.seeds:
                record = self.finished_record(seed_dir(seed))
                if record is not None and record["status"] != "ok":
                    set_aside(seed_dir(seed), trial.user_attrs.get("retry_of", trial.number))

        def run_seed(seed) -> dict:
            run_dir = seed_dir(seed)
            run_overrides = overrides + ([f"seed={seed}"] if seed is not None else [])
            record = self.finished_record(run_dir) if rerun else None
            if record is not None:  # this seed's run ended before the interruption: kept as it is
                return record
            return self.run_one(trial, params, seed, run_overrides + (["trainer.resume=auto"] if rerun and not fresh else []),
                                run_dir, slot)

        records = []
        if self.seeds_together:
            # Every seed's run at once, each its own process on this worker's GPU: a GPU that
            # one small run leaves mostly idle holds the trial's seeds side by side.
            records = run_side_by_side(run_seed, plan.seeds, f"trial-{trial.number}")
        else:
            for seed in plan.seeds:
                records.append(run_seed(seed))
                if records[-1]["status"] in ("pruned", "interrupted") or self.stop.is_set():
                    break
        study_lib.with_retry(lambda: self.tell(trial, records), f"recording trial {trial.number}",
                             plan.cfg.storage_retry_seconds)

    @staticmethod
    def finished_record(run_dir: Path) -> RunRecord | None:
        """The record a run of a re-run trial left when it ended (any status but interrupted).
        It keeps the number of the trial that ran it; ``results.csv`` lists it under the trial
        that re-ran (:func:`write_results`)."""
        try:
            record = read_record(run_dir)
        except (OSError, ValueError):  # none, or not a run record
            return None
        if record.status == "interrupted" or "sweep" not in record:
            return None
        return record

    # -- packed trials (sweep.pack) -----------------------------------------------------------
    def run_packed(self, batch: list[tuple[optuna.Trial, dict]], slot: str | None, waiting: list | None = None) -> None:
        """Run a batch of trials (every seed of each): compatible runs in packs of up to
        ``sweep.pack_size`` (one process each, :mod:`harness.packing`), the rest alone; then
        tell each trial, as :meth:`run_trial` does. ``waiting``: trials this worker runs next,
        kept alive by the packs' heartbeats meanwhile."""
        # Every trial of the batch and those waiting stay alive while any of its processes runs.
        also = tuple(t._trial_id for t in waiting or []) + tuple(t._trial_id for t, _ in batch)
        from harness.packing import pack_key, unpackable_reason

        plan = self.plan
        runs, alone, groups = [], [], {}
        for trial, params in batch:
            trial_dir = plan.sweep_dir / "trials" / study_lib.trial_dir_name(trial)
            overrides = merge_overrides(plan.base_overrides, trial_overrides(plan.axes, params))
            for seed in plan.seeds:
                entry = PackEntry(trial, params, seed, overrides + ([f"seed={seed}"] if seed is not None else []),
                                  trial_dir if len(plan.seeds) == 1 else trial_dir / f"seed_{seed}")
                entry.run_dir.mkdir(parents=True, exist_ok=True)
                entry.run, entry.resolved = compose_overrides(entry.overrides)
                entry.sweep = self.sweep_fields(trial, params, seed, entry.run, slot).to_json()
                runs.append(entry)
                if plan.cfg.gpu_memory_budget is not None:
                    from harness.estimate import estimate_run

                    estimate = estimate_run(entry.run, device="cuda")
                    entry.estimate = estimate["memory_estimate"]
                    entry.record = self.skip_if_over_budget(entry.run, entry.resolved, entry.run_dir, estimate,
                                                            sweep=entry.sweep)
                if entry.record is not None:  # skipped, its record written
                    continue
                if unpackable_reason(entry.run):
                    alone.append(entry)
                else:
                    groups.setdefault(pack_key(entry.resolved), []).append(entry)
        for members in groups.values():
            for chunk in pack_chunks(members, plan.pack_size, plan.cfg.gpu_memory_budget):
                if len(chunk) == 1:
                    alone.extend(chunk)
                elif not self.stop.is_set():
                    self.run_pack(chunk, slot, also)
        for entry in alone:
            if not self.stop.is_set():
                entry.record = self.run_one(entry.trial, entry.params, entry.seed, entry.overrides, entry.run_dir, slot,
                                            also)
        for trial, _ in batch:
            records = [e.record for e in runs if e.trial is trial and e.record is not None]
            if not records:  # the driver stopped before any of its runs started: not a data point
                records = [RunRecord(status="interrupted", run_dir=str(e.run_dir), error="the sweep driver stopped "
                                     "before this run started") for e in runs if e.trial is trial][:1]
            study_lib.with_retry(lambda t=trial, r=records: self.tell(t, r), f"recording trial {trial.number}",
                                 plan.cfg.storage_retry_seconds)

    def run_pack(self, chunk: list[PackEntry], slot: str | None, also: tuple = ()) -> None:
        """One pack process; its members' records, which it writes (sweep block included). A pack
        out of memory splits in two and each half runs again (a single trial then runs alone)."""
        plan = self.plan
        first = chunk[0]
        pack_dir = plan.sweep_dir / "packs" / f"trial_{first.trial.number}_seed_{first.seed}"
        pack_dir.mkdir(parents=True, exist_ok=True)
        log_path = pack_dir / "pack.log"
        # Each member's record is its own to write, sweep block included (harness.packing.stamp_member).
        spec = {"members": [{"overrides": e.overrides, "run_dir": str(e.run_dir.resolve()), "env": {
            "WANDB_RUN_GROUP": plan.cfg.name, "WANDB_NAME": self.wandb_name(e.trial, e.seed)},
            "trial": {"sweep": e.sweep, "log": str(log_path), "pack_memory_estimate_gib": e.pack_estimate_gib}}
            for e in chunk]}
        atomic_write(pack_dir / "pack.json", lambda f: json.dump(spec, f, indent=2))
        env = dict(os.environ, PYTHONWARNINGS=os.environ.get("PYTHONWARNINGS", "ignore"))
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        if len(self.slots) > 1:
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // len(self.slots))))
        started = time.time()
        trials = {e.trial._trial_id for e in chunk} | set(also)  # ``also``: trials waiting on this worker
        code = self.launcher.run([sys.executable, "-m", "harness.packing", str(pack_dir / "pack.json")], env,
                                 os.getcwd(), log_path,
                                 beat=lambda: [study_lib.heartbeat(self.study, t) for t in trials])
        for e in chunk:
            e.record = trial_record(e.run_dir, code, e.resolved, e.run.seed, log_path, started, e.sweep,
                                    pack_log=str(log_path))
        if len(chunk) > 1 and any(e.record["status"] == "oom" for e in chunk):
            log.warning("pack of %d runs (trials %s) ran out of memory: splitting it and running each half again",
                        len(chunk), sorted({e.trial.number for e in chunk}))
            for e in chunk:  # the pack's oom records stay beside the runs, which start again in their dirs
                (e.run_dir / RECORD_NAME).replace(e.run_dir / PACK_OOM_RECORD)
            half = len(chunk) // 2
            for part in (chunk[:half], chunk[half:]):
                if len(part) == 1:
                    e = part[0]
                    e.record = self.run_one(e.trial, e.params, e.seed, e.overrides, e.run_dir, slot, also)
                else:
                    self.run_pack(part, slot, also)

    def wandb_name(self, trial, seed) -> str:
        """The W&B run name of a trial's run (W&B's own WANDB_NAME)."""
        return f"{self.plan.cfg.name}-trial-{trial.number}" + (f"-seed-{seed}" if len(self.plan.seeds) > 1 else "")

    def sweep_fields(self, trial, params, seed, run: RunConfig, slot) -> SweepInfo:
        """The ``sweep`` part of a trial's record, which the trial writes."""
        plan = self.plan
        return SweepInfo(
            name=plan.cfg.name, finding=plan.cfg.finding, study=plan.study_name,
            storage=study_lib.redact(plan.storage_url), scale=plan.cfg.scale, trial=trial.number,
            params=params, seed=seed if seed is not None else run.seed, seeds=[s for s in plan.seeds if s is not None],
            launcher=plan.cfg.launcher, gpu=slot, trials_per_gpu=plan.trials_per_gpu,
            exclusive_gpu=plan.exclusive_gpu, concurrent_trials=len(self.slots),
            seeds_together=self.seeds_together, concurrent_runs=self.concurrent_runs, pack=plan.pack,
        )

    def run_one(self, trial, params, seed, overrides, run_dir: Path, slot, also: tuple = ()) -> RunRecord:
        """One run of a trial in its own process; its record (the run's own, or the driver's
        for a run skipped over the memory budget or whose process left none)."""
        plan = self.plan
        run_dir.mkdir(parents=True, exist_ok=True)
        run, resolved = compose_overrides(overrides)
        sweep = self.sweep_fields(trial, params, seed, run, slot).to_json()
        if plan.cfg.gpu_memory_budget is not None:
            skipped = self.skip_if_over_budget(run, resolved, run_dir, sweep=sweep)
            if skipped is not None:
                return skipped
        log_path = run_dir / "trial.log"
        env = dict(os.environ, PYTHONWARNINGS=os.environ.get("PYTHONWARNINGS", "ignore"))
        # W&B's own variables: one W&B run per trial, grouped by sweep (logger=wandb).
        env["WANDB_RUN_GROUP"] = plan.cfg.name
        env["WANDB_NAME"] = self.wandb_name(trial, seed)
        # The trial's identity, what its record says of the sweep (harness.trial.stamp), and the
        # callbacks it runs: the pruner's reporter when the study prunes (sweeps.pruning, imported
        # by the trial; the driver stays free of Lightning).
        pruning = [{"_target_": "sweeps.pruning.PruningReporter", "storage": plan.storage_url,
                    "study_name": plan.study_name, "trial_id": trial._trial_id}] if plan.cfg.pruner != "none" else []
        env[TRIAL_ENV] = json.dumps({"callbacks": pruning, "sweep": sweep, "log": str(log_path.resolve())}, default=str)
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        if self.concurrent_runs > 1:  # concurrent runs share the host's cores
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self.concurrent_runs)))
        cmd = [sys.executable, "-m", "harness.run", *overrides, f"hydra.run.dir={run_dir.resolve()}"]
        started = time.time()
        code = self.launcher.run(cmd, env, os.getcwd(), log_path,
                                 beat=lambda: [study_lib.heartbeat(self.study, t) for t in {trial._trial_id, *also}])
        return trial_record(run_dir, code, resolved, run.seed, log_path, started, sweep)

    def skip_if_over_budget(self, run: RunConfig, resolved: dict, run_dir: Path, estimate: dict | None = None,
                            sweep: dict | None = None) -> RunRecord | None:
        """None when the run's dry-run estimate fits ``sweep.gpu_memory_budget``; else its
        ``skipped`` record, written (no process runs for it)."""
        from harness.estimate import estimate_run

        estimate = estimate or estimate_run(run, device="cuda")
        total = estimate["memory_estimate"]["total_gib"]
        budget = self.plan.cfg.gpu_memory_budget
        if total <= budget:
            return None
        return left_no_record(run_dir, RunRecord(
            status="skipped", config=resolved, run_dir=str(run_dir), seed=run.seed,
            memory_estimate=estimate["memory_estimate"], trainable_params=estimate["trainable_params"],
            total_params=estimate["total_params"], sweep=sweep,
            error=f"dry-run estimate {total:.2f} GiB exceeds sweep.gpu_memory_budget={budget} GiB; not run"))

    def tell(self, trial: optuna.Trial, records: list[RunRecord]) -> None:
        statuses = [r["status"] for r in records]
        objectives = self.plan.cfg.objectives
        status = next((s for s in statuses if s != "ok"), "ok")
        summary: dict = {}
        values = []
        for objective in objectives:
            got = [metric_value(r, objective.metric) for r in records if r["status"] == "ok"]
            got = [v for v in got if v is not None]
            if got:
                summary[objective.metric] = {"mean": statistics.fmean(got), "std": statistics.stdev(got) if len(got) > 1 else 0.0,
                                             "n": len(got)}
            values.append(statistics.fmean(got) if got else None)
        error = next((r.get("error") for r in records if r["status"] != "ok"), None)
        if status == "ok" and any(v is None for v in values):
            missing = [o.metric for o, v in zip(objectives, values, strict=True) if v is None]
            status, error = "failed", f"objective metric(s) missing from the record: {', '.join(missing)}"
        if status == "ok" and len(records) < len(self.plan.seeds):  # the driver stopped between seeds
            status, error = "interrupted", "the sweep driver stopped before every seed ran"
        trial.set_user_attr("status", status)
        trial.set_user_attr("run_dirs", [r["run_dir"] for r in records])
        trial.set_user_attr("objectives", summary)
        for key in ("peak_memory_gib", "train_seconds", "tokens_per_s"):
            got = [r.get(key) for r in records if r.get(key) is not None]
            if got:
                trial.set_user_attr(key, statistics.fmean(got))
        if error:
            trial.set_user_attr("error", str(error)[:500])
        # skip_if_finished: a retry after a dropped connection may find the first tell committed.
        if status == "ok":
            self.study.tell(trial, values if len(values) > 1 else values[0], skip_if_finished=True)
        elif status == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        elif status == "interrupted":
            # Not a data point: the configuration runs again, from the checkpoint its run saved.
            if self.study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING:  # not on a retried tell
                self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                study_lib.requeue(self.study, self.study._storage.get_trial(trial._trial_id))
        else:
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        log.info("trial %d: %s %s", trial.number, status,
                 " ".join(f"{k}={v['mean']:.4g}" for k, v in summary.items()) if summary else (error or ""))


def suggest(trial: optuna.Trial, axis: Axis):
    if axis.kind in ("categorical", "bundle"):
        return trial.suggest_categorical(axis.key, axis.values)
    if axis.kind == "int":
        return trial.suggest_int(axis.key, int(axis.low), int(axis.high), step=int(axis.step or 1), log=axis.log)
    return trial.suggest_float(axis.key, axis.low, axis.high, step=axis.step, log=axis.log)


def run_side_by_side(run, seeds: list, name: str) -> list[dict]:
    """``run(seed)`` for every seed at once, one daemon thread each (so a driver stopping on
    Ctrl-C never waits for them, as it does not for its workers); the records in seed order."""
    results: list = [None] * len(seeds)

    def one(i: int, seed) -> None:
        try:
            results[i] = run(seed)
        except BaseException as exc:  # re-raised in the worker below
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i, seed), daemon=True, name=f"{name}-seed-{seed}")
               for i, seed in enumerate(seeds)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def set_aside(run_dir: Path, trial: int) -> None:
    """Keep a failed run's record and checkpoints beside the run that replaces it, out of the
    loader's sight (``record.failed-<trial>.json``, ``checkpoints.failed-<trial>``)."""
    for name in (RECORD_NAME, "checkpoints"):  # harness.train.CHECKPOINT_DIR
        old = run_dir / name
        if old.exists():
            old.replace(run_dir / f"{Path(name).stem}.failed-{trial}{Path(name).suffix}")


def trial_record(run_dir: Path, code: int, resolved: dict, seed: int, log_path: Path, started: float,
                 sweep: dict | None, pack_log: str | None = None) -> RunRecord:
    """The record of a trial process that ended with ``code``: the one it wrote, as it wrote it;
    where it left none, the driver's (:func:`no_record_left`), written now."""
    record = own_record(run_dir, started)
    if record is not None:
        return record
    record = no_record_left(run_dir, code, resolved, seed, log_path)
    record.sweep = sweep
    if pack_log is not None:
        record.pack_log = pack_log
    return left_no_record(run_dir, record)


def own_record(run_dir: Path, started: float) -> RunRecord | None:
    """The record a trial process started at ``started`` wrote in ``run_dir``; None if it wrote
    none (an older record there is another run's)."""
    path = run_dir / RECORD_NAME
    if not path.is_file() or path.stat().st_mtime < started - 1:
        return None
    try:
        return read_record(run_dir)
    except (OSError, ValueError):  # not a run record: as if it left none
        return None


def no_record_left(run_dir: Path, code: int, resolved: dict, seed: int, log_path: Path) -> RunRecord:
    """The record of a trial process that left none (killed, or refused its config): failed (or
    interrupted, when SIGINT/SIGTERM stopped it), with the exit code and the tail of its output."""
    tail = read_tail(log_path)
    how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
    last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
    # SIGINT/SIGTERM before the run could write a record (start-up, or never started after the
    # driver's interrupt): not a result; the trial runs again.
    status = "interrupted" if code in STOP_CODES else "failed"
    return RunRecord(status=status, config=resolved, run_dir=str(run_dir), seed=seed,
                     error=f"trial process {how} without a record: {last}"[:1000], log_tail=tail)


def left_no_record(run_dir: Path, record: RunRecord) -> RunRecord:
    """Write the record of a trial whose process left none, or that never ran (skipped): the
    only place the driver writes a record, so it never rewrites one a run wrote."""
    write_record(run_dir, record)
    return record


# A process stopped by SIGINT or SIGTERM: killed by it, or exited 128 + it (harness.run's exit).
STOP_CODES = (-signal.SIGINT, -signal.SIGTERM, 128 + signal.SIGINT, 128 + signal.SIGTERM)


def write_results(sweep_dir: Path, study: optuna.Study | None = None) -> Path | None:
    """Rebuild ``results.csv`` from the sweep's records (one row per run), with each trial's
    Optuna state when the study is given. Returns the path, or None when there is no record."""
    import pandas as pd

    from harness.results import load_records

    trials_dir = sweep_dir / "trials"
    lost = lost_records(study, sweep_dir) if study is not None else []
    has_records = trials_dir.is_dir() and any(trials_dir.rglob(RECORD_NAME))
    if not has_records and not lost:
        return None
    frame = load_records(trials_dir) if has_records else pd.DataFrame()
    if lost:  # a finished trial whose record is gone keeps its row, saying so
        frame = pd.concat([frame, pd.DataFrame(lost)], ignore_index=True)
    if study is not None and "sweep.trial" in frame.columns:
        frame["sweep.trial"] = rerun_trials(frame, study, sweep_dir)
        status = study_lib.status_of(study)
        states = {t.number: t.state.name if status(t) not in study_lib.UNCOUNTED else status(t)
                  for t in study.get_trials(deepcopy=False)}
        frame.insert(0, "trial_state", [states.get(int(n)) if n == n else None for n in frame["sweep.trial"]])
    first = [c for c in ("sweep.trial", "sweep.seed", "trial_state", "status") if c in frame.columns]
    params = sorted(c for c in frame.columns if c.startswith("sweep.params."))
    frame = frame[first + params + [c for c in frame.columns if c not in first and c not in params]]
    path = sweep_dir / RESULTS_NAME
    atomic_write(path, lambda f: frame.to_csv(f, index=False))
    return path


def rerun_trials(frame, study: optuna.Study, sweep_dir: Path) -> list:
    """Each row's trial: its record's, or the later trial that told the study its run dir. A
    re-run trial keeps the records of the seeds that had ended, and those name the trial that
    ran them (the driver does not rewrite a record); the table lists them under the re-run."""
    told: dict[Path, int] = {}
    for t in study.get_trials(deepcopy=False):
        for run_dir in t.user_attrs.get("run_dirs") or []:
            key = relocated(run_dir, sweep_dir).resolve()
            told[key] = max(t.number, told.get(key, t.number))
    paths = frame["record_path"] if "record_path" in frame.columns else [None] * len(frame)
    return [max(n, told.get(Path(path).parent.resolve(), n)) if isinstance(path, str) and n == n else n
            for path, n in zip(paths, frame["sweep.trial"], strict=True)]


def relocated(run_dir: str, sweep_dir: Path) -> Path:
    """A run dir the study stored, under ``sweep_dir`` when the sweep dir was moved or carried
    to another machine since (the study keeps absolute paths)."""
    path = Path(run_dir)
    if path.exists() or "trials" not in path.parts:
        return path
    start = len(path.parts) - 1 - path.parts[::-1].index("trials")
    return sweep_dir.joinpath(*path.parts[start:])


def lost_records(study: optuna.Study, sweep_dir: Path) -> list[dict]:
    """A row for each run of a finished trial whose record.json is gone (deleted, or a disk
    lost): the study still counts the configuration as done, so it is listed, not dropped."""
    rows = []
    status = study_lib.status_of(study)
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING or status(t) in study_lib.UNCOUNTED:
            continue
        for run_dir in t.user_attrs.get("run_dirs") or []:
            if (relocated(run_dir, sweep_dir) / RECORD_NAME).is_file():
                continue
            row = {"sweep.trial": t.number, "status": "lost", "run_dir": run_dir,
                   "error": f"record missing: {Path(run_dir) / RECORD_NAME} (trial {t.number} finished "
                            f"{t.user_attrs.get('status', t.state.name.lower())}; its record was removed)"}
            row.update({f"sweep.params.{k}": v for k, v in study_lib.trial_params(t).items()})
            for metric, summary in (t.user_attrs.get("objectives") or {}).items():
                row[metric] = summary.get("mean")
            rows.append(row)
    return rows


def results_table(plan: SweepPlan, sweep_dir: Path) -> str:
    """A compact text table of the sweep's runs: params, status, objectives, memory, time."""
    import pandas as pd

    frame = pd.read_csv(sweep_dir / RESULTS_NAME, keep_default_na=False, na_values=[""])
    cols = ["sweep.trial"] + (["sweep.seed"] if len(plan.seeds) > 1 else [])
    cols += [f"sweep.params.{a.key}" for a in plan.axes]
    cols += [c for c in TABLE_COLUMNS if c in frame.columns]
    for o in plan.cfg.objectives:
        if o.metric in frame.columns and o.metric not in cols:
            cols.append(o.metric)
    shown = frame[[c for c in cols if c in frame.columns]].rename(columns=lambda c: c.removeprefix("sweep.params.").removeprefix("sweep."))
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def run_sweep(run: RunConfig, user_overrides: list[str], sweep_dir: Path) -> int:
    """Plan, validate, open the study, run the workers; results.csv and a table at the end.

    Returns 0 when every configuration is done, 1 otherwise (interrupted, or a worker failed).
    """
    from tqdm.auto import tqdm

    cfg = run.sweep
    sweep_dir = sweep_dir.resolve()
    plan = plan_sweep(cfg, user_overrides, sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    plan.slots = gpu_slots(cfg.workers, plan.trials_per_gpu, plan.exclusive_gpu)
    storage = study_lib.open_storage(plan.storage_url)
    sampler = make_sampler(plan)
    pruner = optuna.pruners.MedianPruner(n_warmup_steps=1) if cfg.pruner == "median" else optuna.pruners.NopPruner()
    study = study_lib.open_study(storage, plan.study_name, plan.directions, sampler, pruner, plan.signature())
    atomic_write(sweep_dir / PLAN_NAME, lambda f: json.dump(
        {"name": cfg.name, "finding": cfg.finding, "description": cfg.description, "study": plan.study_name,
         "storage": study_lib.redact(plan.storage_url), **plan.signature(), "scale": cfg.scale,
         "exclusive_gpu": plan.exclusive_gpu, "trials_per_gpu": plan.trials_per_gpu, "pack": plan.pack,
         "pack_size": plan.pack_size if plan.pack else None}, f, indent=2, default=str))
    if plan.exclusive_gpu and cfg.trials_per_gpu > 1:
        log.info("this sweep measures runtime: trials keep a GPU to themselves (sweep.trials_per_gpu=%d ignored)", cfg.trials_per_gpu)
    launcher = (SubmititLauncher(cfg.submitit, sweep_dir / "submitit", cfg.heartbeat_seconds) if cfg.launcher == "submitit"
                else LocalLauncher(cfg.heartbeat_seconds))
    if cfg.retry_failed:
        again = study_lib.with_retry(lambda: study_lib.retry_failed(study), "queueing failed trials", cfg.storage_retry_seconds)
        log.info("sweep.retry_failed: %s", f"trial(s) {', '.join(map(str, again))} run again from the start"
                 if again else "no failed trial to run again")
    for row in lost_records(study, sweep_dir):
        log.warning("trial %d: %s; listed as lost in %s", row["sweep.trial"], row["error"], RESULTS_NAME)
    driver = Driver(plan, study, launcher, plan.slots)
    log.info("sweep %s: %d configuration(s) x %d seed(s), %d worker(s), study %r in %s%s", cfg.name, plan.planned,
             len(plan.seeds), len(driver.slots), plan.study_name, study_lib.redact(plan.storage_url),
             f"; compatible trials packed, up to {plan.pack_size} runs per process" if plan.pack else "")
    driver.bar = tqdm(total=plan.planned, desc=f"sweep {cfg.name}", unit="trial", file=sys.stderr, dynamic_ncols=True)
    threads = [threading.Thread(target=driver.worker, args=(slot,), daemon=True, name=f"worker-{i}")
               for i, slot in enumerate(driver.slots)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=1.0)
    except KeyboardInterrupt:
        driver.stop.set()
        # Running trials stop as on preemption: each at the end of its optimizer step, with a
        # checkpoint when checkpointing is on, and is queued to run again from it.
        if launcher.interrupt() if hasattr(launcher, "interrupt") else 0:
            log.warning("interrupted: stopping the running trials (they checkpoint when checkpointing is on and run "
                        "again from there when this command is repeated; Ctrl-C again stops at once)")
            # Not Thread.join/is_alive: after a signal interrupted a join, Python 3.11 can report
            # a running thread as stopped. Each worker sets its own event when it ends.
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            for done in driver.done:
                done.wait(max(0.0, deadline - time.monotonic()))
        raise
    finally:
        driver.bar.close()
    if driver.errors and isinstance(driver.errors[0], study_lib.StorageUnavailable):
        raise driver.errors[0]  # no results table from a storage that cannot be read
    path = study_lib.with_retry(lambda: write_results(sweep_dir, study), "writing results.csv", cfg.storage_retry_seconds)
    if path is not None:
        print(results_table(plan, sweep_dir))
        log.info("results: %s", path)
    if driver.errors:
        raise driver.errors[0]
    final = study_lib.with_retry(lambda: study_lib.progress(study, plan.planned, by_point=plan.grid is not None),
                                 "checking the study", cfg.storage_retry_seconds)
    return 0 if final.finished else 1


def make_sampler(plan: SweepPlan) -> optuna.samplers.BaseSampler:
    cfg = plan.cfg
    if cfg.sampler == "grid":
        return AskTellGridSampler(grid_space(plan.axes), seed=cfg.sampler_seed)
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=cfg.sampler_seed)
    if cfg.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=cfg.sampler_seed)
    return optuna.samplers.TPESampler(seed=cfg.sampler_seed, multivariate=True)


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler whose ``after_trial`` does not call ``study.stop()``, which Optuna allows
    only inside ``study.optimize``; under ask/tell the driver decides when the grid is done."""

    def after_trial(self, study, trial, state, values) -> None:
        return None
