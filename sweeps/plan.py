"""A sweep before it runs: its plan (scale applied, overrides merged, every listed configuration
validated), the checks of its objectives and inputs, whether it packs, and its sampler.

:func:`sweeps.driver.plan_sweep` builds the :class:`SweepPlan` from these pieces.
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import optuna

from harness.compose import compose
from harness.paths import CONF_DIR
from harness.schema import ConfigError, RunConfig, SweepConfig
from harness.sweep_schema import RUNTIME_METRICS

from . import study as study_lib
from .space import Axis, grid_space, merge_overrides, override_key, parse_space

log = logging.getLogger("harness.sweep")

# Numeric record fields an objective can name (harness.train writes them), the nested groups
# whose leaves are numbers, and the suffixes of the measured ones (memory and time phases).
RECORD_METRICS = ("val_loss_last", "val_loss_best", "val_loss_first", "train_loss_last", "train_loss_best",
                  "train_loss_first", "peak_memory_gib", "train_seconds", "tokens_per_s", "mfu", "total_seconds",
                  "eval_seconds", "setup_seconds", "trainable_params", "total_params", "optimizer_steps")
RECORD_GROUPS = ("memory_estimate", "data")
METRIC_SUFFIXES = ("_gib", "_gb", "_bytes", "_seconds", "_tokens_per_s")


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
    listed: list[RunConfig] = field(default_factory=list)  # the composed run of each point of plan_points, in order

    def run_dir(self, trial: optuna.Trial, seed) -> Path:
        """Where a trial's run for ``seed`` runs: its folder under ``trials/`` (for a re-run, the
        folder of the trial it re-runs), and ``seed_<seed>/`` in it where the sweep has seeds."""
        trial_dir = self.sweep_dir / "trials" / study_lib.trial_dir_name(trial)
        return trial_dir if len(self.seeds) == 1 else trial_dir / f"seed_{seed}"

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.cfg.objectives]

    def signature(self) -> dict:
        """What makes two invocations the same sweep (checked on resume)."""
        return {"space": {a.key: a.values or [a.low, a.high, a.log, a.step] for a in self.axes},
                "objectives": [[o.metric, o.direction] for o in self.cfg.objectives],
                "overrides": self.base_overrides, "seeds": self.seeds, "sampler": self.cfg.sampler,
                "planned": self.planned}


def plan_points(axes: list[Axis], grid: list[dict] | None) -> list[dict]:
    """The configurations a sweep can list before it runs: every grid point, or for a sampler
    over ranges the points that probe both ends of every range (each axis's probe values in turn)."""
    if grid is not None:
        return grid
    return [{a.key: a.probe_values()[i % len(a.probe_values())] for a in axes}
            for i in range(max(len(a.probe_values()) for a in axes))]


def systems_reason(cfg: SweepConfig, axes: list[Axis], exclusive: bool) -> str | None:
    """Why a sweep measures the system (memory, runtime, quantization), whose trials must each
    have the process to themselves; None for a quality sweep."""
    measured = [o.metric for o in cfg.objectives if o.metric.split(".")[-1] in RUNTIME_METRICS
                or o.metric.endswith(METRIC_SUFFIXES) or o.metric in ("peak_memory_gib", "mfu")]
    if measured:
        return f"its objective {measured[0]} measures the system"
    if exclusive:
        return "its trials keep a GPU to themselves (sweep.exclusive_gpu)"
    # A quantization the sweep varies is what it measures. One it holds fixed (F4's nf4 base, as
    # the study ran) is a setting of a quality sweep: its trials pack over the one base (4-bit;
    # an int8 base runs each trial alone, harness.packing.unpackable_reason).
    swept = [o for a in axes for b in a.bundles.values() for o in b]
    if any(a.key.split(".")[0] == "quant" for a in axes) or any(override_key(o).split(".")[0] == "quant" for o in swept):
        return "it measures quantization"
    return None


def packs(cfg: SweepConfig, axes: list[Axis], exclusive: bool, runs: list[RunConfig]) -> bool:
    """Whether the sweep trains its compatible trials in packs (``sweep.pack``): ``auto`` for a
    quality sweep without pruning some of whose ``runs`` (its listed configurations) can pack;
    never for a systems sweep (``true`` there is refused, as where no run can pack)."""
    if cfg.pack == "false":
        return False
    why = systems_reason(cfg, axes, exclusive) or none_packable(runs)
    if cfg.pack == "true":
        if why:
            raise ConfigError(f"sweep.pack=true: sweep {cfg.name} cannot pack: {why}, so each trial runs alone "
                              "(sweep.pack=false)")
        if cfg.pruner != "none":
            raise ConfigError("sweep.pack=true: packed trials report no intermediate values; use sweep.pruner=none")
        return True
    return why is None and cfg.pruner == "none"


def warn_compiled_bf16(runs: list[RunConfig]) -> None:
    """Warn when a quality sweep's runs train compiled blocks with bf16 weights
    (``trainer.compile`` at precision ``auto`` or ``bf16-true``). Compiled blocks round
    differently from eager ones (a fused kernel rounds to bf16 once where eager rounds after each
    op): in a same-GPU A/B (docs/benchmarks.md, 2026-12-05) packs compiled with CUDA graphs trained
    to held-out NLLs up to two seed SDs from the same runs eager, and on CPU a compiled pack's
    training loss left the eager one's from the first forward, without dropout too. The committed
    findings ran eager, so compiled runs are for speed, not for comparing with them."""
    if any(run.trainer.compile and run.trainer.precision in ("auto", "bf16-true") for run in runs):
        log.warning("trainer.compile=true with bf16 weights: compiled blocks round differently from eager ones, and moved "
                    "the held-out NLL by up to two seed SDs against the same runs eager (docs/benchmarks.md, 2026-12-05); "
                    "use these runs for speed, not to compare with eager runs (the committed findings ran eager)")


def none_packable(runs: list[RunConfig]) -> str | None:
    """Why no run of the sweep can train in a pack (an int8 base, DoRA everywhere, ...), or None
    where some can: packing them would only serialise trials that run alone anyway."""
    from harness.packing import unpackable_reason

    reasons = [unpackable_reason(run) for run in runs]
    return f"none of its runs can pack ({reasons[0]})" if reasons and all(reasons) else None


def check_sweep_claims(cfg: SweepConfig) -> None:
    """The findings report's claims about this sweep name axes and levels of its full design
    (not the smoke subset): a renamed label fails here, not as a silent 'not measured'.

    A study of another name (``sweep.study_name``) of a named sweep may run part of its design
    or extend it (new levels, e.g. a higher lr), read by the report with the own-named study's
    records: its claims are checked on the named sweep's own design, and each axis it sweeps must
    be one of that design's axes, with its labels where the axis is a choice."""
    from harness.report.claims import check_claims

    space = parse_space(dict(cfg.space))
    own = named_design(cfg.name) if cfg.study_name not in (None, cfg.name) else {}
    if own:  # a named sweep's design (custom has none: its space is the command line's)
        for axis in space:
            if axis.key not in own:
                raise ConfigError(f"sweep.space.{axis.key}: not an axis of sweep {cfg.name} ({', '.join(own)}); a study "
                                  f"of another name ({cfg.study_name}) runs part of that sweep or new levels of its axes "
                                  "(a new axis: a sweep of its own, e.g. +sweep=custom)")
            unknown = sorted(set(axis.bundles) - set(own[axis.key].bundles))
            if unknown:
                raise ConfigError(f"sweep.space.{axis.key}: {', '.join(unknown)} is not a choice of sweep {cfg.name} "
                                  f"({', '.join(own[axis.key].bundles)})")
        space = list(own.values())
    try:
        check_claims(cfg.name, {a.key: list(a.values) for a in space})
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def named_design(name: str) -> dict[str, Axis]:
    """The axes of the named sweep's own YAML (conf/sweep/NAME.yaml), by key; none without one."""
    from omegaconf import OmegaConf

    design = CONF_DIR / "sweep" / f"{name}.yaml"
    if not design.is_file():
        return {}
    return {a.key: a for a in parse_space(dict(OmegaConf.to_container(OmegaConf.load(design)).get("space") or {}))}


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
            _, resolved = compose(merge_overrides(base, axis.overrides(value)))
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
        if parts[0].startswith(("eval_quantized", "eval_base_quantized")) and not run.eval.quantized_context:
            raise ConfigError(f"sweep.objectives: {objective.metric!r} is not scored with eval.quantized_context=false "
                              "(the runs score only the adapter merged into the 16-bit base: eval.TASK.METRIC)")
    if cfg.pruner != "none" and run.trainer.val_every_n_steps is None:
        raise ConfigError("sweep.pruner: pruning needs intermediate val losses; set trainer.val_every_n_steps")
    data.load_examples(run.data)
    if run.eval.tasks:
        evaluate.check_tasks(run.eval.tasks)


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
