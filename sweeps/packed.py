"""Packed trials (``sweep.pack``): compatible runs of a sweep trained together, up to
``sweep.pack_size`` in one process over one frozen base (:mod:`harness.packing`), cut to fit the
memory budget; a pack's runs out of memory run again, split in two (those that finished stand).

:class:`PackedTrials` is the driver's packed half, mixed into :class:`sweeps.driver.Driver`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna

from harness.compose import compose
from harness.paths import atomic_write
from harness.record import PACK_STATE, RECORD_NAME, RunRecord
from harness.schema import RunConfig

from . import study as study_lib
from .launch import run_environment, run_side_by_side
from .space import merge_overrides, trial_overrides

log = logging.getLogger("harness.sweep")

PACK_OOM_RECORD = "pack_oom_record.json"  # a run's record from a pack that ran out of memory (then split)
# Of a GPU's memory, what packs may plan to hold: the rest is each process's CUDA context (about
# 0.5 GiB), the allocator's slack and compiled graphs' pools, which the estimate leaves out.
GPU_SHARE_FOR_PACKS = 0.9


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
    most ``budget_gib`` by the dry-run estimates: the frozen base (and, in ``*-mixed``, autocast's
    half-precision copies of it) counted once, each run's adapter, gradients, optimizer state,
    activations and loss backward added (each run's ``estimate``). Each run's
    ``pack_estimate_gib`` is set to its pack's estimate.

    The runs are cut in order of their LoRA rank (stable: a trial's seeds stay together): a
    pack's batched LoRA terms pad every trial to its largest rank, so like ranks packed together
    compute less (`rag3`, 2026-12-07, cut as they came: packs such as r = 2, 2, 2, 64, 64
    computed 2.1x the LoRA terms of their trials' own ranks)."""
    chunks: list[list] = []
    current: list = []
    held = 0
    for entry in sorted(entries, key=_lora_rank):
        est = entry.estimate
        own = 0 if est is None else est["total_bytes"] - est["weights_bytes"] - est.get("autocast_copies_bytes", 0)  # the base's
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


def _lora_rank(entry) -> int:
    run = getattr(entry, "run", None)  # none in runs_per_pack's probes
    return run.adapter.r if run is not None else 0


def runs_per_pack(estimate: dict | None, size: int, budget_gib: float | None) -> int:
    """How many runs of one dry-run ``estimate`` a pack holds: ``size`` at most, cut by
    ``budget_gib`` as :func:`pack_chunks` cuts (at least one)."""
    if estimate is None or budget_gib is None:
        return size
    probes = [PackEntry(None, {}, None, [], Path(), estimate=estimate) for _ in range(size)]
    return len(pack_chunks(probes, size, budget_gib)[0])


def trials_per_batch(runs_per_trial: int, capacity: int, size: int, share: int) -> int:
    """How many trials a worker takes at once. Where the memory budget holds fewer runs in a pack
    (``capacity``) than ``sweep.pack_size`` (``size``), the number, up to ``share`` (the worker's
    share of the trials left), whose runs fill their packs best (fewer trials where two fill
    alike), so that few runs train in a part-empty pack after their batch's full ones: 4 workers
    on an H100 held packs of 5 runs, and trials of 3 seeds taken 2 at a time made a pack of 5 and
    a run alone; 5 at a time make three packs of 5. Otherwise as many trials as ``size`` runs
    hold. At least one."""
    if capacity >= size or runs_per_trial <= 0:
        return max(1, size // max(1, runs_per_trial))

    def fill(trials: int) -> float:
        runs = trials * runs_per_trial
        return runs / (-(-runs // capacity) * capacity)

    # ``capacity`` trials always fill whole packs, so no more are needed.
    return max(range(1, max(1, min(share, capacity)) + 1), key=lambda t: (fill(t), -t))


@functools.cache
def gpu_memory_gib(gpu: str) -> float | None:
    """GPU ``gpu``'s total memory by ``nvidia-smi`` (the driver holds no CUDA context), or None."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", gpu],
                             capture_output=True, text=True, timeout=60)
        return float(out.stdout.split()[0]) / 1024 if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None


def pack_budget_gib(budget_gib: float | None, slot: str | None, slots: list) -> float | None:
    """The memory a pack on ``slot`` may plan to hold: ``sweep.gpu_memory_budget`` when set, else
    its GPU's share for packs divided among the workers on that GPU (six packs of eight 135M runs
    planned about 180 GiB of an H200's 139). None without a GPU or where it cannot be read."""
    if budget_gib is not None or slot is None or "," in slot:
        return budget_gib
    total = gpu_memory_gib(slot)
    if total is None:
        return None
    budget = round(total * GPU_SHARE_FOR_PACKS / max(1, slots.count(slot)), 1)
    _log_budget(slot, budget, total, slots.count(slot))
    return budget


@functools.cache
def _log_budget(slot: str, budget: float, total: float, workers: int) -> None:
    log.info("packs on GPU %s: up to %.1f GiB each by their dry-run estimates (%.0f%% of its %.1f GiB, %d worker(s) "
             "on it; sweep.gpu_memory_budget sets it)", slot, budget, 100 * GPU_SHARE_FOR_PACKS, total, workers)


class PackedTrials:
    """The driver's packed trials. Mixed into :class:`sweeps.driver.Driver`, whose attributes it
    uses: ``plan``, ``study``, ``launcher``, ``slots``, ``stop``, and its methods for one run
    (``sweep_fields``, ``skip_if_over_budget``, ``run_one``, ``wandb_name``), for the record of an
    ended process (``trial_record``: the one it wrote, or the driver's where it left none) or of
    one that never ran (``left_no_record``), for whether a run may start (``may_start``) and
    for telling the study (``tell``)."""

    def run_packed(self, batch: list[tuple[optuna.Trial, dict]], slot: str | None, waiting: list | None = None) -> None:
        """Run a batch of trials (every seed of each): compatible runs in packs of up to
        ``sweep.pack_size`` (one process each, :mod:`harness.packing`), the rest alone; then
        tell each trial, as :meth:`run_trial` does. ``waiting``: trials this worker runs next,
        kept alive by the packs' heartbeats meanwhile."""
        # Every trial of the batch and those waiting stay alive while any of its processes runs.
        also = tuple(t._trial_id for t in waiting or []) + tuple(t._trial_id for t, _ in batch)
        from harness.packing import pack_key, unpackable_reason

        plan = self.plan
        budget = pack_budget_gib(plan.cfg.gpu_memory_budget, slot, self.slots)
        runs, alone, groups = [], [], {}
        for trial, params in batch:
            overrides = merge_overrides(plan.base_overrides, trial_overrides(plan.axes, params))
            for seed in plan.seeds:
                entry = PackEntry(trial, params, seed, overrides + ([f"seed={seed}"] if seed is not None else []),
                                  plan.run_dir(trial, seed))
                if "trial_dir" in trial.user_attrs:  # a re-run: the seeds that ended keep their records
                    entry.record = self.finished_record(entry.run_dir)
                    if entry.record is not None:
                        runs.append(entry)
                        continue
                entry.run_dir.mkdir(parents=True, exist_ok=True)
                entry.run, entry.resolved = compose(entry.overrides)
                entry.sweep = self.sweep_fields(trial, params, seed, entry.run, slot).to_json()
                runs.append(entry)
                if budget is not None:
                    from harness.estimate import estimate_run

                    estimate = estimate_run(entry.run, device="cuda")
                    entry.estimate = estimate["memory_estimate"]
                    if plan.cfg.gpu_memory_budget is not None:  # a run over the user's budget is skipped
                        entry.record = self.skip_if_over_budget(entry.run, entry.resolved, entry.run_dir, estimate,
                                                                sweep=entry.sweep)
                if entry.record is not None:  # skipped, its record written
                    continue
                if unpackable_reason(entry.run):
                    alone.append(entry)
                else:
                    groups.setdefault(pack_key(entry.resolved), []).append(entry)
        for members in groups.values():
            for chunk in pack_chunks(members, plan.pack_size, budget):
                if len(chunk) == 1 and not (chunk[0].run_dir / PACK_STATE).is_file():
                    alone.extend(chunk)  # a run alone, unless it goes on from the state its last pack saved
                elif self.may_start():
                    self.run_pack(chunk, slot, also)
        self.run_alone(alone, budget, slot, also)
        for trial, _ in batch:
            records = [e.record for e in runs if e.trial is trial and e.record is not None]
            if not records:  # the driver stopped before any of its runs started: not a data point
                records = [RunRecord(status="interrupted", run_dir=str(e.run_dir), error="the sweep driver stopped "
                                     "before this run started") for e in runs if e.trial is trial][:1]
            study_lib.with_retry(lambda t=trial, r=records: self.tell(t, r), f"recording trial {trial.number}",
                                 plan.cfg.storage_retry_seconds)

    def run_alone(self, alone: list[PackEntry], budget: float | None, slot: str | None, also: tuple = ()) -> None:
        """A batch's runs that cannot pack (full fine-tuning, DoRA, ...) or are a pack of one, each
        its own process: side by side where the worker's pack budget is known and their dry-run
        estimates together fit it (as a trial's seeds run unpacked, ``sweep.seeds_together``),
        else one after another. None starts once the driver stops or ``sweep.start_within`` passed."""
        def run(entry: PackEntry) -> None:
            if not self.may_start():
                return
            # A re-run's run alone takes over its folder as Driver.run_trial's does (the folder
            # holds its interrupted record, which only a resuming run may replace).
            rerun = "trial_dir" in entry.trial.user_attrs and not entry.trial.user_attrs.get("fresh")
            entry.record = self.run_one(entry.trial, entry.params, entry.seed,
                                        entry.overrides + (["trainer.resume=auto"] if rerun else []),
                                        entry.run_dir, slot, also)

        estimates = [e.estimate["total_bytes"] for e in alone if e.estimate is not None]
        if budget is not None and len(alone) > 1 and len(estimates) == len(alone) and sum(estimates) <= budget * 2**30:
            log.info("%d runs that do not pack (trials %s) run side by side: %.1f GiB by their estimates, within "
                     "the %.1f GiB this worker's packs may hold", len(alone), sorted({e.trial.number for e in alone}),
                     sum(estimates) / 2**30, budget)
            run_side_by_side(run, alone, f"alone-{alone[0].trial.number}")
        else:
            for entry in alone:
                run(entry)

    def run_pack(self, chunk: list[PackEntry], slot: str | None, also: tuple = ()) -> None:
        """One pack process; its members' records, which it writes (sweep block included). A pack
        out of memory runs its runs out of memory again, split in two (a single one alone); the
        runs that finished keep their records (in `rag2`, 2026-12-07, one run of five ran out of
        memory while scoring, and the four that had finished trained again)."""
        plan = self.plan
        first = chunk[0]
        pack_dir = plan.sweep_dir / "packs" / f"trial_{first.trial.number}_seed_{first.seed}"
        pack_dir.mkdir(parents=True, exist_ok=True)
        log_path = pack_dir / "pack.log"
        # Each member's record is its own to write, sweep block included (harness.packing.stamp_member).
        spec = {"members": [{"overrides": e.overrides, "run_dir": str(e.run_dir.resolve()), "env": {
            "WANDB_RUN_GROUP": plan.cfg.name, "WANDB_NAME": self.wandb_name(e.trial, e.seed)},
            "trial": {"sweep": e.sweep, "log": str(log_path), "pack_memory_estimate_gib": e.pack_estimate_gib,
                      "memory_estimate": e.estimate}}  # the pack need not estimate (or trace) it again
            for e in chunk]}
        atomic_write(pack_dir / "pack.json", lambda f: json.dump(spec, f, indent=2))
        env = run_environment()
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
            e.record = self.trial_record(e.run_dir, code, e.resolved, e.run.seed, log_path, started, e.sweep,
                                    pack_log=str(log_path))
        again = [e for e in chunk if e.record["status"] == "oom"]  # the others finished: their records stand
        if len(chunk) > 1 and again:
            log.warning("pack of %d runs (trials %s) ran out of memory: running its %d run(s) out of memory again, "
                        "split in two", len(chunk), sorted({e.trial.number for e in chunk}), len(again))
            for e in again:  # the pack's oom records stay beside the runs, which start again in their dirs
                (e.run_dir / RECORD_NAME).replace(e.run_dir / PACK_OOM_RECORD)
            half = len(again) // 2
            for part in (again[:half], again[half:]):
                if not part:
                    continue
                if not self.may_start():  # not run again now: the next command runs it
                    for e in part:
                        record = RunRecord(status="interrupted", config=e.resolved, run_dir=str(e.run_dir), seed=e.run.seed,
                                           error="its pack ran out of memory, and the sweep driver started no more runs")
                        record.sweep, record.pack_log = e.sweep, str(log_path)
                        e.record = self.left_no_record(e.run_dir, record)
                elif len(part) == 1:
                    e = part[0]
                    e.record = self.run_one(e.trial, e.params, e.seed, e.overrides, e.run_dir, slot, also)
                else:
                    self.run_pack(part, slot, also)
