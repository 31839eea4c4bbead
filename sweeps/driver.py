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

Its parts, one module each: :mod:`sweeps.plan` (what the plan is made of and the sampler),
:mod:`sweeps.workers` (each worker's GPU and loop), :mod:`sweeps.packed` (trials trained together
in one process), :mod:`sweeps.results` (``results.csv`` and the table); this module plans, runs
one trial's runs, tells the study, and writes the records no process left.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from harness.compose import compose as compose_overrides  # as the CLI composes; tests spy on it
from harness.paths import atomic_write
from harness.record import (
    CHECKPOINT_DIR,
    RECORD_NAME,
    RunRecord,
    SweepInfo,
    read_record,
    read_tail,
    write_record,
)
from harness.schema import ConfigError, RunConfig, SweepConfig
from harness.trial import TRIAL_ENV

from . import gpu_use
from . import study as study_lib
from .launch import (
    LocalLauncher,
    SubmititLauncher,
    preload_wanted,
    run_environment,
    run_side_by_side,
)
from .packed import PackedTrials
from .packed import pack_chunks as pack_chunks  # re-exported: tests import it from here
from .plan import (
    SweepPlan,
    check_inputs,
    check_sweep_claims,
    dedupe_by_effect,
    make_sampler,
    packs,
    plan_points,
    systems_reason,
    warn_compiled_bf16,
)
from .results import RESULTS_NAME, lost_records, metric_value, results_table, write_results
from .results import relocated as relocated  # re-exported: tests import it from here
from .space import (
    grid_points,
    grid_space,
    merge_overrides,
    override_key,
    parse_space,
    trial_overrides,
)
from .workers import WorkerLoop, cap_to_cores, gpu_slots

log = logging.getLogger("harness.sweep")

PLAN_NAME = "sweep.json"
# How long a stopping driver waits for its running trials to checkpoint and record it.
STOP_GRACE_SECONDS = 120.0


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
    else:
        grid = None
        planned = int(n_trials)
    runs = []
    for params in plan_points(axes, grid):
        try:
            runs.append(compose_overrides(merge_overrides(base, trial_overrides(axes, params)))[0])
        except ConfigError as exc:
            where = ", ".join(f"{k}={v}" for k, v in params.items())
            raise ConfigError(f"{exc} (in sweep {cfg.name}, at {where})") from None
    first = runs[0]
    check_inputs(first, cfg)
    exclusive = cfg.exclusive_gpu if cfg.exclusive_gpu is not None else cfg.measures_runtime
    if systems_reason(cfg, axes, exclusive) is None:
        warn_compiled_bf16(runs)
    return SweepPlan(cfg=cfg, axes=axes, base_overrides=base, seeds=seeds, planned=planned, grid=grid,
                     sweep_dir=sweep_dir, storage_url=study_lib.storage_url(cfg.storage, sweep_dir),
                     study_name=cfg.study_name or cfg.name, exclusive_gpu=exclusive,
                     trials_per_gpu=1 if exclusive else cfg.trials_per_gpu,
                     pack=packs(cfg, axes, exclusive, runs), pack_size=cfg.pack_size, listed=runs)


def set_aside(run_dir: Path, trial: int) -> None:
    """Keep a failed run's record and checkpoints beside the run that replaces it, out of the
    loader's sight (``record.failed-<trial>.json``, ``checkpoints.failed-<trial>``)."""
    for name in (RECORD_NAME, CHECKPOINT_DIR):
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


class Driver(WorkerLoop, PackedTrials):
    """Runs one driver's workers against the shared study: each worker's loop
    (:class:`sweeps.workers.WorkerLoop`) runs trials alone (here) or packed
    (:class:`sweeps.packed.PackedTrials`)."""

    trial_record = staticmethod(trial_record)  # the record of an ended trial process, for packs too
    left_no_record = staticmethod(left_no_record)  # the driver's record of a run that never ran, for packs too

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
        self.started = time.monotonic()  # sweep.start_within counts from here: planned, the study open
        self.window_closed = False  # sweep.start_within has passed (workers start nothing more)
        # A trial's seeds run side by side (sweep.seeds_together), except where runtime is
        # measured (each run keeps its GPU to itself) or packs take the seeds instead.
        wanted = plan.cfg.seeds_together == "true" or (plan.cfg.seeds_together == "auto" and any(slots)
                                                        and plan.cfg.pruner == "none")
        self.seeds_together = wanted and len(plan.seeds) > 1 and not plan.exclusive_gpu and not plan.pack
        if self.seeds_together and plan.cfg.workers is None:
            self.slots = slots = cap_to_cores(slots, len(plan.seeds))
        self.concurrent_runs = len(slots) * (len(plan.seeds) if self.seeds_together else 1)


    # -- one trial ------------------------------------------------------------------------
    def run_trial(self, trial: optuna.Trial, params: dict, slot: str | None) -> None:
        plan = self.plan
        # A re-run of a lost or interrupted trial runs in that trial's folder and resumes from
        # the checkpoint its run left there (a fresh start where there is none).
        rerun = "trial_dir" in trial.user_attrs
        # A failed trial run again (sweep.retry_failed) starts over: only ok seeds are kept.
        fresh = bool(trial.user_attrs.get("fresh"))
        overrides = merge_overrides(plan.base_overrides, trial_overrides(plan.axes, params))

        def seed_dir(seed) -> Path:
            return plan.run_dir(trial, seed)

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
            if self.may_start():
                records = run_side_by_side(run_seed, plan.seeds, f"trial-{trial.number}")
        else:
            for seed in plan.seeds:
                if not self.may_start():
                    break
                records.append(run_seed(seed))
                if records[-1]["status"] in ("pruned", "interrupted"):
                    break
        if not records:  # stopping, or sweep.start_within passed, before its first run: not a data point
            records = [RunRecord(status="interrupted", run_dir=str(seed_dir(plan.seeds[0])),
                                 error="the sweep driver started no more runs (stopping, or sweep.start_within passed)")]
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
        env = run_environment()
        # W&B's own variables: one W&B run per trial, grouped by sweep (logger=wandb).
        env["WANDB_RUN_GROUP"] = plan.cfg.name
        env["WANDB_NAME"] = self.wandb_name(trial, seed)
        # The trial's identity, what its record says of the sweep (harness.trial.stamp), and the
        # callbacks it runs: the pruner's reporter when the study prunes (sweeps.pruning, imported
        # by the trial, not by the driver).
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


def tokenize_data_once(base_overrides: list[str]) -> None:
    """Tokenize the sweep's data into the cache before any trial starts, so its first runs (or
    packs) read it rather than each tokenizing it at once (issue 23: in the seeds sweep the
    first four trials each spent 33 s setting up, the fifth, on the cache, 2 s). The sweep's
    own config only (a space over data settings tokenizes the rest in its trials); data too
    small for the cache is left alone. A failure here is left to the trials to report."""
    from harness import data, models

    try:
        run, _ = compose_overrides(base_overrides)
        examples, _ = data.load_examples(run.data)
        if len(examples) < data.TOKENIZED_CACHE_MIN_EXAMPLES:
            return
        started = time.monotonic()
        _, stats = data.tokenize_examples_cached(examples, models.load_tokenizer(run.model), run.data)
        if not stats["tokenized_from_cache"]:
            log.info("data tokenized once for the sweep's runs in %.0f s", time.monotonic() - started)
    except Exception as exc:  # noqa: BLE001 -- each run reports its own data or model error
        log.warning("could not tokenize the data before the trials (%s); each run tokenizes it",
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def write_plan(plan: SweepPlan) -> None:
    """The sweep dir's ``sweep.json``: what the sweep is, its signature, how it runs."""
    cfg = plan.cfg
    atomic_write(plan.sweep_dir / PLAN_NAME, lambda f: json.dump(
        {"name": cfg.name, "finding": cfg.finding, "description": cfg.description, "study": plan.study_name,
         "storage": study_lib.redact(plan.storage_url), **plan.signature(), "scale": cfg.scale,
         "exclusive_gpu": plan.exclusive_gpu, "trials_per_gpu": plan.trials_per_gpu, "pack": plan.pack,
         "pack_size": plan.pack_size if plan.pack else None}, f, indent=2, default=str))


def run_workers(driver: Driver, launcher) -> None:
    """One thread per worker slot until all are done; Ctrl-C stops the running trials (within
    :data:`STOP_GRACE_SECONDS`) and is raised again."""
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
        # checkpoint when checkpointing is on (a packed trial: its pack state), and is queued to
        # run again from it.
        if launcher.interrupt() if hasattr(launcher, "interrupt") else 0:
            log.warning("interrupted: stopping the running trials (they checkpoint when checkpointing is on, packed ones "
                        "save their pack states, and run "
                        "again from there when this command is repeated; Ctrl-C again stops at once)")
            # Not Thread.join/is_alive: after a signal interrupted a join, Python 3.11 can report
            # a running thread as stopped. Each worker sets its own event when it ends.
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            for done in driver.done:
                done.wait(max(0.0, deadline - time.monotonic()))
        raise
    finally:
        driver.bar.close()


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
    write_plan(plan)
    if plan.exclusive_gpu and cfg.trials_per_gpu > 1:
        log.info("this sweep measures runtime: trials keep a GPU to themselves (sweep.trials_per_gpu=%d ignored)", cfg.trials_per_gpu)
    launcher = (SubmititLauncher(cfg.submitit, sweep_dir / "submitit", cfg.heartbeat_seconds) if cfg.launcher == "submitit"
                else LocalLauncher(cfg.heartbeat_seconds, preload=preload_wanted()))
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
    if cfg.launcher == "local":  # submitit's jobs may not share this host's cache
        tokenize_data_once(plan.base_overrides)
    driver.bar = tqdm(total=plan.planned, desc=f"sweep {cfg.name}", unit="trial", file=sys.stderr, dynamic_ncols=True)
    with gpu_use.sampling(sweep_dir, enabled=cfg.launcher == "local"):  # submitit's trials run on other hosts
        run_workers(driver, launcher)
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
    if driver.window_closed and not final.finished:
        log.warning("sweep.start_within=%gs: stopped starting runs, %d configuration(s) not done yet; run the same "
                    "command again to resume", cfg.start_within, final.planned - final.done)
    return 0 if final.finished else 1

