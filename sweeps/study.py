"""The Optuna study behind a sweep: storage, liveness of trials, and what is left to run.

Optuna's own heartbeat (``RDBStorage(heartbeat_interval=...)``) covers only SQL storages and
only ``study.optimize``; the harness drives ask/tell over any storage (SQLite, journal file,
PostgreSQL), so it keeps its own heartbeat in each trial's system attrs and fails trials whose
driver is gone, re-enqueueing their parameters.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from harness.paths import pid_alive
from harness.schema import ConfigError

log = logging.getLogger(__name__)

# Trial outcomes that are data: the configuration was tried and the result stands.
DATA_STATUSES = ("ok", "oom", "diverged", "pruned", "failed", "skipped")
# Trials that do not count: their driver died (``lost``, re-run), a signal stopped their run
# (``interrupted``, re-run from its checkpoint), or another took the point.
UNCOUNTED = ("lost", "interrupted", "duplicate", "retried")


def storage_url(storage: str | None, sweep_dir: Path) -> str:
    """The storage a sweep uses: SQLite in the sweep dir by default, ``journal`` for a journal
    file there (shared filesystems), or any Optuna storage URL."""
    if storage is None:
        return f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
    if storage == "journal":
        return f"journal:///{(sweep_dir / 'optuna.journal').resolve()}"
    return storage


class StorageError(ConfigError):
    """``sweep.storage`` cannot be opened: an unsupported URL, a server that is down or refuses
    the login, a missing driver, an SQLite file in a missing folder, a corrupt or truncated
    database. One line naming the URL (password masked) and what to do."""


def open_storage(url: str):
    """An Optuna storage object for a URL from :func:`storage_url`, proven readable.

    Every way opening can fail is one :class:`StorageError` line (see :func:`storage_error_line`),
    raised before any trial starts; an SQLite file is checked whole (``PRAGMA quick_check``) so
    a truncated optuna.db is refused, never read as a sweep with fewer trials.
    """
    try:
        storage = _open_storage(url)
        storage.get_all_studies()  # the first query: connects, reads the schema and the studies
        if url.startswith("sqlite:///"):
            _check_sqlite(storage)
        return storage
    except StorageError:
        raise
    except Exception as exc:  # drivers raise many types; each becomes one line, no traceback
        raise StorageError(storage_error_line(url, exc)) from exc


def _open_storage(url: str):
    if url.startswith("journal:///"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(url[len("journal:///") - 1:]))
    if url.startswith("sqlite:///"):
        # Several worker threads and trial processes write one file: wait on its lock.
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    if url.startswith(("postgresql", "mysql")):
        return _open_server_storage(url)
    return optuna.storages.get_storage(url)


def _check_sqlite(storage) -> None:
    from sqlalchemy import text

    with storage.engine.connect() as connection:
        problems = [row[0] for row in connection.execute(text("PRAGMA quick_check")).fetchall()]
    if problems != ["ok"]:
        raise RuntimeError(f"database disk image is malformed ({problems[0]})")


SUPPORTED_STORAGES = ("leave sweep.storage unset (SQLite in the sweep dir), or use journal, sqlite:///PATH, "
                      "postgresql://USER:PASSWORD@HOST/DB or mysql+pymysql://USER:PASSWORD@HOST/DB")


def storage_error_line(url: str, exc: BaseException) -> str:
    """``sweep.storage=URL: what is wrong; what to do`` for an error opening ``url`` (the password
    masked)."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    detail = _first_line(exc)
    detail = detail.split(") ", 1)[1] if detail.startswith("(") and ") " in detail else detail  # "(psycopg.X) ..."
    low = detail.lower()
    label = f"sweep.storage={redact(url)}"
    path = _storage_file(url)
    if isinstance(exc, ModuleNotFoundError) or isinstance(exc.__cause__, ModuleNotFoundError):
        return f"{label}: its database driver is not installed ({detail}); install it (e.g. pip install psycopg for postgresql://, pip install pymysql for mysql+pymysql://)"
    if isinstance(exc, (ArgumentError, NoSuchModuleError)) or (isinstance(exc, ValueError) and "storage" in low) \
            or "://" not in url:
        return f"{label}: not a storage the harness can open ({detail}); {SUPPORTED_STORAGES}"
    if path is not None:
        folder = path.parent
        if not folder.exists():
            return f"{label}: the folder {folder} does not exist; create it, or {SUPPORTED_STORAGES.split(', or ')[0]}"
        if not folder.is_dir():
            return f"{label}: {folder} is a file, not a folder; choose another path"
        if path.is_dir():
            return f"{label}: {path} is a folder, not a database file; choose another path"
        if any(s in low for s in ("not a database", "malformed", "expecting", "decode", "json")):
            return (f"{label}: {path} is not a readable Optuna {'journal' if url.startswith('journal') else 'database'} "
                    f"(corrupt or truncated: {detail}); move it away to start the sweep afresh (the trials' records "
                    "stay in trials/), or restore it from a copy")
        if "unable to open" in low or "permission" in low or "read-only" in low:
            return f"{label}: cannot open or create {path} ({detail}); choose a folder you can write"
    if any(s in low for s in ("password", "authentication", "access denied", "role ")):
        return f"{label}: the server refused the login ({detail}); check the user name and password in sweep.storage"
    if "database" in low and "does not exist" in low:
        return f"{label}: {detail}; create the database first (e.g. createdb NAME) or name one that exists"
    if any(s in low for s in ("connection refused", "could not connect", "connection failed", "could not translate",
                              "name or service not known", "timeout", "timed out", "no route", "unreachable")):
        return (f"{label}: cannot reach the database server ({detail}); start it, or fix the host and port, then "
                "run the same command again")
    return f"{label}: cannot open the sweep storage ({type(exc).__name__}: {detail})"


def _storage_file(url: str) -> Path | None:
    """The file of an SQLite or journal storage URL, or None for a server."""
    for scheme in ("sqlite:///", "journal:///"):
        if url.startswith(scheme):
            return Path(url[len(scheme):]).expanduser()
    return None


def _open_server_storage(url: str, attempts: int = 6):
    """RDBStorage on a database server, tolerant of drivers that start at the same moment.

    Several drivers started together (an sbatch array) race to create Optuna's tables
    on an empty database; the loser sees a duplicate type or table. The winner's
    schema is then complete a moment later, so the loser simply tries again.
    """
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(attempts):
        try:
            # pool_pre_ping: a dropped connection (server restart) is replaced, not fatal.
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        except (IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 + random.random() * (attempt + 1))


def redact(url: str) -> str:
    """A storage URL without its password, for logs and records."""
    from sqlalchemy.engine import make_url

    if "://" not in url or url.startswith(("sqlite", "journal")):
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL: keep only the scheme
        return url.split("://", 1)[0] + "://***"


def sweep_identity(signature: dict) -> dict:
    """The part of a sweep's signature that must match on resume: its overrides less those that
    do not change what a trial computes (the resume-neutral keys, e.g. ``logger``,
    ``trainer.oom_retry``), so a sweep resumes under a newer harness that adds such an override."""
    from harness.module import is_resume_neutral

    overrides = [o for o in signature.get("overrides") or [] if not is_resume_neutral(str(o).split("=", 1)[0].lstrip("+~"))]
    return {**signature, "overrides": overrides}


def open_study(storage, study_name: str, directions: list[str], sampler, pruner, signature: dict) -> optuna.Study:
    """Create the study or join the existing one; a study made for a different sweep is an error."""
    study = optuna.create_study(storage=storage, study_name=study_name, directions=directions, sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    if list(study.directions) != [optuna.study.StudyDirection[d.upper()] for d in directions]:
        raise ConfigError(f"sweep.objectives: study {study_name!r} in this storage has other directions; "
                          "use a new hydra.sweep.dir or sweep.study_name")
    stored = study.user_attrs.get("signature")
    wanted = json.loads(json.dumps(signature, default=str))
    if stored is None:
        study.set_user_attr("signature", wanted)
    elif sweep_identity(stored) != sweep_identity(wanted):
        stored, wanted = sweep_identity(stored), sweep_identity(wanted)
        changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
        raise ConfigError(f"sweep: study {study_name!r} in this storage was started with different "
                          f"{', '.join(changed)}; resume with the same command, or use a new hydra.sweep.dir "
                          "or sweep.study_name")
    return study


def mark_running(study: optuna.Study, trial: optuna.Trial) -> None:
    """Stamp a new trial with its driver (host, pid) and a first heartbeat."""
    storage = study._storage
    storage.set_trial_system_attr(trial._trial_id, "driver_host", socket.gethostname())
    storage.set_trial_system_attr(trial._trial_id, "driver_pid", os.getpid())
    heartbeat(study, trial._trial_id)


def heartbeat(study: optuna.Study, trial_id: int) -> None:
    """Stamp a running trial as alive. A missed beat (storage briefly unreachable) is harmless:
    a trial is stale only after ``sweep.stale_after_seconds`` without one."""
    try:
        study._storage.set_trial_system_attr(trial_id, "heartbeat", time.time())
    except TRANSIENT_STORAGE_ERRORS as exc:
        log.warning("heartbeat of trial id %d not stored (storage unreachable: %s)", trial_id, _first_line(exc))


class StorageUnavailable(RuntimeError):
    """The study's storage stayed unreachable for longer than ``sweep.storage_retry_seconds``."""


def _transient_errors() -> tuple[type[BaseException], ...]:
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import InterfaceError, OperationalError

    return (OperationalError, InterfaceError, StorageInternalError)


TRANSIENT_STORAGE_ERRORS = _transient_errors()


def _first_line(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]


def with_retry(call, what: str, retry_seconds: float):
    """``call()``, retried while the storage is unreachable (a database restart, a network blip).

    Connections are re-made on the next try (the engine pings them before use). After
    ``retry_seconds`` without success raises :class:`StorageUnavailable`.
    """
    deadline = time.monotonic() + retry_seconds
    delay = 0.5
    warned = False
    while True:
        try:
            return call()
        except TRANSIENT_STORAGE_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                raise StorageUnavailable(f"sweep storage unreachable for {retry_seconds:g} s during {what} "
                                         f"({_first_line(exc)})") from exc
            if not warned:
                log.warning("sweep storage unreachable during %s (%s); retrying for up to %g s",
                            what, _first_line(exc), retry_seconds)
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def is_stale(trial: optuna.trial.FrozenTrial, stale_after: float, now: float | None = None) -> bool:
    """A RUNNING trial whose driver is dead (same host) or silent for ``stale_after`` seconds."""
    now = time.time() if now is None else now
    attrs = trial.system_attrs
    if attrs.get("driver_host") == socket.gethostname() and attrs.get("driver_pid") and not pid_alive(int(attrs["driver_pid"])):
        return True
    beat = attrs.get("heartbeat")
    if beat is None:
        start = trial.datetime_start.timestamp() if trial.datetime_start else now
        return now - start > stale_after
    return now - float(beat) > stale_after


def trial_dir_name(trial) -> str:
    """The folder under ``trials/`` a trial runs in: its own number, or for a re-run of a lost or
    interrupted trial the folder of the trial it re-runs (so it resumes from the checkpoint there)."""
    return str(trial.user_attrs.get("trial_dir", trial.number))


def requeue(study: optuna.Study, trial, fresh: bool = False) -> None:
    """Enqueue a lost or interrupted trial's parameters again, to run in its folder; ``fresh``:
    a failed trial run again from the start, keeping only its seeds' ok records."""
    params = trial.params or trial.system_attrs.get("fixed_params") or {}
    if params:
        attrs = {"retry_of": trial.number, "trial_dir": trial_dir_name(trial)}
        study.enqueue_trial(params, user_attrs={**attrs, "fresh": True} if fresh else attrs, skip_if_exists=False)


RETRIED_ATTR = "retried_trials"  # a study attribute: a finished trial's own attributes are frozen


def status_of(study: optuna.Study):
    """A function giving each trial's status as the driver counts it: its own ``status``
    attribute, or ``retried`` for a failed trial that :func:`retry_failed` queued again."""
    retried = set(study.user_attrs.get(RETRIED_ATTR) or [])
    return lambda t: "retried" if t.number in retried else t.user_attrs.get("status")


def retry_failed(study: optuna.Study) -> list[int]:
    """Queue every failed trial (status ``failed``: a crash, not an OOM, divergence or skip,
    which are findings) to run again from the start in its folder; the failed trial is listed
    as ``retried`` and no longer counts. For after a fix: ``sweep.retry_failed=true``. Returns
    the numbers of the trials queued again."""
    status = status_of(study)
    trials = study.get_trials(deepcopy=False)
    # A driver that got there first (several started with the same command) already queued it.
    taken = {t.user_attrs.get("retry_of") for t in trials if t.user_attrs.get("fresh")}
    queued = [t for t in trials if t.state == TrialState.FAIL and status(t) == "failed" and t.number not in taken]
    if queued:
        study.set_user_attr(RETRIED_ATTR, sorted({*(study.user_attrs.get(RETRIED_ATTR) or []), *(t.number for t in queued)}))
    for trial in queued:
        requeue(study, trial, fresh=True)
    return [t.number for t in queued]


def reap_stale(study: optuna.Study, stale_after: float) -> list[int]:
    """Fail the trials whose driver is gone and enqueue their parameters again.

    Returns the numbers of the trials reaped here. Safe with several drivers: only the one
    whose state change succeeds re-enqueues.
    """
    storage = study._storage
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(trial, stale_after):
            continue
        try:
            # Attrs cannot change once finished, so label it before failing it.
            storage.set_trial_user_attr(trial._trial_id, "status", "lost")
            changed = storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:  # it finished meanwhile, or another driver reaped it
            continue
        if not changed:
            continue
        requeue(study, trial)
        log.warning("trial %d was left running by a driver that is gone; marked failed and queued again", trial.number)
        reaped.append(trial.number)
    return reaped


@dataclass
class Progress:
    """Where the study stands: configurations done, in flight, queued, and still to start."""

    planned: int
    done: int
    running: int
    waiting: int

    @property
    def to_start(self) -> int:
        return max(0, self.planned - self.done - self.running - self.waiting)

    @property
    def finished(self) -> bool:
        return self.done >= self.planned


def trial_params(trial: optuna.trial.FrozenTrial) -> dict:
    return dict(trial.params) or dict(trial.system_attrs.get("fixed_params") or {})


def progress(study: optuna.Study, planned: int, by_point: bool) -> Progress:
    """Count configurations (grid points when ``by_point``, else trials) by state."""
    from .space import point_key

    done, running, waiting = set(), set(), set()
    status_now = status_of(study)
    for t in study.get_trials(deepcopy=False):
        status = status_now(t)
        if status in UNCOUNTED:
            continue
        key = point_key(trial_params(t)) if by_point else t.number
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (t.state == TrialState.FAIL and status in DATA_STATUSES):
            done.add(key)
        elif t.state == TrialState.RUNNING:
            running.add(key)
        elif t.state == TrialState.WAITING:
            waiting.add(key)
    running -= done
    waiting -= done | running
    return Progress(planned, len(done), len(running), len(waiting))


def is_duplicate(study: optuna.Study, trial: optuna.Trial, params: dict) -> int | None:
    """The number of another trial that already holds this grid point (done, or running with a
    lower number), or None. Concurrent drivers can pick one point; the later trial yields."""
    from .space import point_key

    key = point_key(params)
    status = status_of(study)
    for t in study.get_trials(deepcopy=False):
        if t.number == trial.number or status(t) in UNCOUNTED or point_key(trial_params(t)) != key:
            continue
        done = t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (t.state == TrialState.FAIL and status(t) in DATA_STATUSES)
        if done or (t.state == TrialState.RUNNING and t.number < trial.number):
            return t.number
    return None
