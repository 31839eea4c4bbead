"""The ``sweep`` schema (``+sweep=NAME``): an Optuna study over run overrides, its objectives and
its SLURM settings. The run schema holds it as :attr:`harness.schema.RunConfig.sweep`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from .schema_rules import check_seed, choice, closed_set, one_of, require

Sampler = closed_set("Sampler", ("grid", "tpe", "random", "nsga2"), __name__)
Direction = closed_set("Direction", ("minimize", "maximize"), __name__)
Pruner = closed_set("Pruner", ("none", "median"), __name__)
Launcher = closed_set("Launcher", ("local", "submitit"), __name__)
Scale = closed_set("Scale", ("default", "smoke"), __name__)
Cluster = closed_set("Cluster", ("slurm", "local", "debug"), __name__)
# Objectives that measure time: trials that optimise them keep a GPU to themselves.
RUNTIME_METRICS = ("train_seconds", "total_seconds", "eval_seconds", "tokens_per_s", "mfu")


@dataclass
class SweepObjective:
    """One objective: a record metric (dotted path, e.g. ``eval.harness_heldout.token_nll``,
    ``peak_memory_gib``, ``train_seconds``) and whether to minimize or maximize it."""

    metric: str = MISSING
    # A plain string checked against Direction, not a Direction field: OmegaConf would name a bad
    # direction in a replaced objectives list only as "direction"; the check names the objective.
    direction: str = "minimize"

    def __post_init__(self) -> None:
        self.direction = choice(self.direction, f"sweep.objectives[{self.metric}].direction", Direction)


@dataclass
class SubmititConfig:
    """SLURM settings for ``sweep.launcher=submitit``: one SLURM job per trial.

    cluster: ``slurm`` on a cluster, ``local`` runs the same path as local processes (tests).
    """

    cluster: Cluster = Cluster.slurm
    partition: str | None = None
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 64
    timeout_min: int = 120
    additional_parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cluster = choice(self.cluster, "sweep.submitit.cluster", Cluster)
        require(self.gpus_per_node >= 0, "sweep.submitit.gpus_per_node", f"must be >= 0, got {self.gpus_per_node}")
        require(self.timeout_min > 0, "sweep.submitit.timeout_min", f"must be > 0, got {self.timeout_min}")


@dataclass
class SweepConfig:
    """A sweep: an Optuna study over run overrides, each trial one subprocess run.

    space: ``{override key: spec}``. A spec is a list of values (categorical; a grid axis);
    ``{low, high, log, step, int}`` (a numeric range; not for grid); or ``{choices: {label:
    [overrides]}}`` (a categorical over labelled bundles of overrides). The key of a plain
    spec is a Hydra override key (``adapter.r``; a group name like ``quant`` picks an option).
    overrides: fixed overrides of every trial, applied before the user's own.
    objectives: record metrics with directions; several make a multi-objective study.
    seeds: run every configuration once per seed (objective = mean; record keeps all); empty
    = the run's seed. storage: null = ``optuna.db`` (SQLite) in the sweep dir; ``journal``
    = a JournalStorage file ``optuna.journal`` there (for shared filesystems); otherwise an
    Optuna storage URL (``postgresql://...`` for many hosts). workers: concurrent trials of
    this driver (null = GPUs x trials_per_gpu, or 1 without a GPU). gpu_memory_budget (GiB):
    trials whose dry-run estimate exceeds it are recorded as skipped without running.
    scale: ``default`` or ``smoke`` (applies ``smoke.overrides``, ``smoke.space`` over the space,
    ``smoke.n_trials`` and ``smoke.seeds``: a CPU-sized version of the same sweep). heartbeat_seconds /
    stale_after_seconds: a RUNNING trial silent that long is taken as lost and run again.
    storage_retry_seconds: how long the driver keeps retrying an unreachable storage (a database
    restart) before it stops with exit code 3; the same command resumes.
    pack: ``true`` trains the compatible trials of the sweep together, up to ``pack_size`` in one
    process over one frozen base (:mod:`harness.packing`); ``auto`` does so for quality sweeps
    only (never for one that measures memory, runtime or quantization); ``false``: one process
    per trial. seeds_together: ``true`` starts every seed's run of a trial at once, each its own
    process on the trial's GPU (so a GPU holds up to ``trials_per_gpu`` x seeds runs, and without
    ``workers`` set, no more runs than CPU cores); ``auto``
    does so where the runs get a GPU and no pruner is on (the quality sweeps' setting); ``false`` runs
    them one after another (needed with a pruner, which stops the later seeds). Not applied
    where the sweep measures runtime (each run keeps its GPU) or packs trials. retry_failed: on
    this invocation, run the trials that failed (status ``failed``, e.g. a bug since fixed; not
    ``oom``, ``diverged`` or ``skipped``, which are results) again from the start in their
    folders; the failed records are kept there as ``record.failed-<trial>.json``. start_within
    (seconds): start no run or pack later than this after the driver started its workers (the
    sweep planned and its study open, seconds after the command); the running ones finish, the
    rest wait for the same command again. For a machine lent for a fixed time: its limit minus
    the planning and the longest run or pack, so that none is stopped halfway and its training
    lost. With seeds one after another, each seed's run is checked (a trial may stop between
    seeds); with the submitit launcher it bounds when jobs are submitted, not when they start.
    """

    name: str = MISSING
    finding: str | None = None
    description: str = ""
    space: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    sampler: Sampler = Sampler.grid
    sampler_seed: int = 0
    objectives: list[SweepObjective] = field(default_factory=list)
    n_trials: int | None = None
    seeds: list[int] = field(default_factory=list)
    pruner: Pruner = Pruner.none
    storage: str | None = None
    study_name: str | None = None
    workers: int | None = None
    trials_per_gpu: int = 1
    exclusive_gpu: bool | None = None
    gpu_memory_budget: float | None = None
    launcher: Launcher = Launcher.local
    submitit: SubmititConfig = field(default_factory=SubmititConfig)
    scale: Scale = Scale.default
    smoke: dict[str, Any] = field(default_factory=dict)
    heartbeat_seconds: float = 10.0
    stale_after_seconds: float = 120.0
    storage_retry_seconds: float = 300.0
    pack: str = "false"
    pack_size: int = 8
    seeds_together: str = "false"
    retry_failed: bool = False
    start_within: float | None = None

    def __post_init__(self) -> None:
        # pack and seeds_together stay strings, not a Choice: they take YAML booleans (pack: true),
        # which an Enum field refuses; sweep.pack=true arrives as the string True
        self.pack = str(self.pack).lower()
        self.seeds_together = str(self.seeds_together).lower()
        one_of(self.seeds_together, "sweep.seeds_together", ("auto", "true", "false"))
        one_of(self.pack, "sweep.pack", ("auto", "true", "false"))
        require(self.pack_size > 0, "sweep.pack_size", f"must be > 0, got {self.pack_size}")
        require(self.start_within is None or self.start_within > 0, "sweep.start_within",
                f"must be > 0 seconds or null, got {self.start_within}")
        self.sampler = choice(self.sampler, "sweep.sampler", Sampler)
        self.pruner = choice(self.pruner, "sweep.pruner", Pruner)
        self.launcher = choice(self.launcher, "sweep.launcher", Launcher)
        self.scale = choice(self.scale, "sweep.scale", Scale)
        require(len(self.objectives) > 0, "sweep.objectives", "needs at least one {metric, direction}")
        require(len(self.space) > 0, "sweep.space", "is empty: give at least one override key to sweep")
        require(self.n_trials is None or self.n_trials > 0, "sweep.n_trials", f"must be > 0 or null, got {self.n_trials}")
        require(self.sampler == "grid" or self.n_trials is not None or self.smoke.get("n_trials") is not None,
                 "sweep.n_trials", f"is required with sampler={self.sampler}")
        require(self.pruner == "none" or len(self.objectives) == 1, "sweep.pruner", "pruning needs a single objective")
        require(self.pruner == "none" or self.seeds_together != "true", "sweep.seeds_together",
                 "cannot be true with a pruner (a pruned seed stops the trial's later seeds)")
        require(self.workers is None or self.workers > 0, "sweep.workers", f"must be > 0 or null, got {self.workers}")
        require(self.trials_per_gpu > 0, "sweep.trials_per_gpu", f"must be > 0, got {self.trials_per_gpu}")
        require(self.gpu_memory_budget is None or self.gpu_memory_budget > 0, "sweep.gpu_memory_budget", f"must be > 0 GiB or null, got {self.gpu_memory_budget}")
        require(len(set(self.seeds)) == len(self.seeds), "sweep.seeds", f"has repeated seeds: {list(self.seeds)}")
        for seed in self.seeds:
            check_seed(seed, "sweep.seeds")
        check_seed(self.sampler_seed, "sweep.sampler_seed")
        require(self.storage_retry_seconds > 0, "sweep.storage_retry_seconds", f"must be > 0, got {self.storage_retry_seconds}")
        require(self.heartbeat_seconds > 0 and self.stale_after_seconds > self.heartbeat_seconds,
                 "sweep.stale_after_seconds", "must be greater than sweep.heartbeat_seconds (both > 0)")
        unknown = set(self.smoke) - {"overrides", "space", "n_trials", "seeds"}
        require(not unknown, "sweep.smoke", f"unknown keys {sorted(unknown)}; expected overrides, space, n_trials, seeds")

    @property
    def measures_runtime(self) -> bool:
        return any(o.metric in RUNTIME_METRICS for o in self.objectives)
