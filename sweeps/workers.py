"""The driver's workers: which GPU each holds, and the loop each runs (poll the study, ask for a
trial and its configuration, skip one another worker took, run it alone or in a pack).

:class:`WorkerLoop` is mixed into :class:`sweeps.driver.Driver`.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from functools import partial

import optuna
from optuna.trial import TrialState

from harness.record import CHECKPOINT_DIR

from . import study as study_lib
from .space import Axis, point_key

log = logging.getLogger("harness.sweep")

MAX_YIELDS_WITHOUT_PROGRESS = 20


class SweepStalled(RuntimeError):
    """The driver kept drawing configurations that were taken and ran none: a bug, not a sweep."""


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


class WorkerLoop:
    """The loop of each of the driver's worker threads. Mixed into :class:`sweeps.driver.Driver`,
    whose attributes it uses: ``plan``, ``study``, ``stop``, ``lock``, ``ask_lock``, ``bar``,
    ``errors``, ``yielded``, ``done``, ``started``, ``window_closed``, and its ways to run trials (``run_trial``, and
    ``run_packed`` of :class:`sweeps.packed.PackedTrials`)."""

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
                if self.start_window_closed():
                    return
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
                if self.plan.pack and self.packable(got[0]):
                    batch, reruns = self._fill_pack(got, slot, left=p.to_start + p.waiting)
                    self.run_packed(batch, slot, waiting=[t for t, _ in reruns])
                    for rerun in reruns:
                        self.run_trial(*rerun, slot)
                else:
                    self.run_trial(*got, slot)
        except BaseException as exc:  # surfaced by the main thread
            self.errors.append(exc)
            self.stop.set()

    def may_start(self) -> bool:
        """Whether a run may start now: the driver is not stopping and ``sweep.start_within`` has
        not passed. Checked before every run or pack a worker starts (a trial's next seed, the
        next pack of a batch, the re-runs drawn while filling a pack, the halves of a pack out of
        memory), so that none starts after the window."""
        return not self.stop.is_set() and not self.start_window_closed()

    def start_window_closed(self) -> bool:
        """Whether ``sweep.start_within`` seconds have passed since the driver started its workers
        (the sweep planned and its study open): then this worker starts nothing more (said once
        per driver)."""
        limit = self.plan.cfg.start_within
        if limit is None or time.monotonic() - self.started < limit:
            return False
        with self.lock:
            if not self.window_closed:
                self.window_closed = True
                log.info("sweep.start_within=%gs has passed: no more runs start; the running ones finish", limit)
        return True

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

    def packable(self, trial: optuna.Trial) -> bool:
        """Whether a trial can join a pack: a fresh one, or the re-run of a lost or interrupted one
        that left no checkpoint of a run alone to resume from (a packed run leaves its pack state,
        which any pack resumes: :mod:`harness.pack_state`; its seeds that ended keep their
        records, :meth:`sweeps.packed.PackedTrials.run_packed`). Not a failed trial
        run again from the start (``sweep.retry_failed``), which sets its failed seeds aside, nor
        one whose pack ran out of memory (a pack of the same size would again)."""
        from .packed import PACK_OOM_RECORD

        attrs = trial.user_attrs
        if "trial_dir" not in attrs:
            return True
        if attrs.get("fresh"):
            return False
        dirs = [self.plan.run_dir(trial, seed) for seed in self.plan.seeds]
        return not any(any((d / CHECKPOINT_DIR).glob("*.ckpt")) or (d / PACK_OOM_RECORD).is_file() for d in dirs)

    def _fill_pack(self, first: tuple[optuna.Trial, dict], slot: str | None, left: int) -> tuple[list, list]:
        """``first`` and as many more packable trials (:meth:`packable`) as fit a pack
        (``sweep.pack_size`` runs, each trial one run per seed) or, where the GPU's memory budget
        holds fewer runs in a pack, as fill their packs best within this worker's share of the
        ``left`` trials (:meth:`_trials_per_batch`), and a re-run
        drawn meanwhile that must resume from its checkpoint: it runs alone after the pack. A
        trial whose configuration cannot pack (:meth:`trains_in_a_pack`: full fine-tuning, DoRA,
        ...) runs alone beside the pack and takes none of its room; up to a pack's worth of such runs."""
        batch, reruns = [first], []
        size, per_trial = self.plan.pack_size, len(self.plan.seeds)
        first_run = self._compose_trial(first[1])
        first_packs = self._packs(first_run)
        share = -(-max(1, left) // max(1, len(self.slots)))
        most = self._trials_per_batch(first_run if first_packs else None, slot, share)
        packed = per_trial if first_packs else 0
        alone = per_trial - packed
        while packed < most * per_trial and alone + per_trial <= size and not self.stop.is_set():
            p = study_lib.with_retry(self._poll, "polling the study", self.plan.cfg.storage_retry_seconds)
            if p.to_start == 0 and p.waiting == 0:
                break
            got = self._ask()
            if got is None:
                continue
            if not self.packable(got[0]):
                reruns.append(got)
                break
            batch.append(got)
            if self.trains_in_a_pack(got[1]):
                packed += per_trial
            else:
                alone += per_trial
        return batch, reruns

    def trains_in_a_pack(self, params: dict) -> bool:
        """Whether a configuration's runs can train in a pack (:func:`harness.packing.unpackable_reason`)."""
        return self._packs(self._compose_trial(params))

    @staticmethod
    def _packs(run) -> bool:
        from harness.packing import unpackable_reason

        return unpackable_reason(run) is None

    def _trials_per_batch(self, run, slot: str | None, share: int) -> int:
        """How many trials a worker packs at once, from the dry-run estimate of the batch's first
        ``run`` against the memory a pack on ``slot`` may hold (:func:`sweeps.packed.trials_per_batch`);
        ``run`` None (it cannot pack): as many as ``sweep.pack_size`` runs hold."""
        from harness.estimate import estimate_run

        from .packed import pack_budget_gib, runs_per_pack, trials_per_batch

        plan, per_trial = self.plan, len(self.plan.seeds)
        budget = pack_budget_gib(plan.cfg.gpu_memory_budget, slot, self.slots)
        estimate = None if budget is None or run is None else estimate_run(run, device="cuda")["memory_estimate"]
        capacity = runs_per_pack(estimate, plan.pack_size, budget)
        trials = trials_per_batch(per_trial, capacity, plan.pack_size, share)
        if capacity < plan.pack_size:
            _log_batch(slot, capacity, plan.pack_size, per_trial)
        return trials

    def _compose_trial(self, params: dict):
        from harness.compose import compose

        from .space import merge_overrides, trial_overrides

        run, _ = compose(merge_overrides(self.plan.base_overrides, trial_overrides(self.plan.axes, params)))
        return run

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


@functools.cache
def _log_batch(slot: str | None, capacity: int, size: int, per_trial: int) -> None:
    where = f" on GPU {slot}" if slot is not None else ""
    log.info("packs%s hold %d runs by their dry-run estimates, fewer than sweep.pack_size=%d: workers take trials "
             "of %d run(s) in numbers that fill such packs best", where, capacity, size, per_trial)


def suggest(trial: optuna.Trial, axis: Axis):
    if axis.kind in ("categorical", "bundle"):
        return trial.suggest_categorical(axis.key, axis.values)
    if axis.kind == "int":
        return trial.suggest_int(axis.key, int(axis.low), int(axis.high), step=int(axis.step or 1), log=axis.log)
    return trial.suggest_float(axis.key, axis.low, axis.high, step=axis.step, log=axis.log)

