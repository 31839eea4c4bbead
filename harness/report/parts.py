"""The vocabulary claims are written in: the record metrics they name (with their names, units
and directions) and the kinds of part that decide a finding, one dataclass each.

The parts themselves, with their declared margins, are in :mod:`.claims`; how each kind is
measured is in :mod:`.effects`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .frame import MEMORY, MEMORY_GB, level

Pins = tuple[tuple[str, str], ...]


# Metrics --------------------------------------------------------------------------------------
NLL = "eval.harness_heldout.token_nll"  # the study's protocol score (merged 16-bit for QLoRA)
QUANT_NLL = "eval_quantized.harness_heldout.token_nll"  # QLoRA: in-process on the 4-bit base
TRAIN_SECONDS = "train_seconds"
STEP_SECONDS = "steady_step_seconds"
ESTIMATE_GIB = "memory_estimate.total_gib"
AGREE = "eval.harness_agreement.margin"
AGREE_ACC = "eval.harness_agreement.acc"
CAPITALS = "eval.harness_capitals.margin"
CAPITALS_ACC = "eval.harness_capitals.acc"
ADD1D = "eval.harness_add1d.gold_logprob"
ADD1D_ACC = "eval.harness_add1d.acc"
PROBES = (AGREE, CAPITALS, ADD1D)
ARITH_2DS_PPL = "eval.harness_arith_2ds.perplexity"
ARITH_ACCS = ("eval.harness_arith_2ds.acc", "eval.harness_arith_4ds.acc")

# (name, unit, higher is better)
METRICS = {
    NLL: ("held-out token NLL", "nats", False),
    QUANT_NLL: ("held-out token NLL, in-process 4-bit", "nats", False),
    MEMORY: ("training peak memory", "GiB", False),
    MEMORY_GB: ("training peak allocated", "GB", False),
    TRAIN_SECONDS: ("train time", "s", False),
    STEP_SECONDS: ("steady-state step time", "s", False),
    AGREE: ("agreement log-prob margin", "nats", True),
    AGREE_ACC: ("agreement accuracy", "", True),
    CAPITALS: ("capitals log-prob margin", "nats", True),
    CAPITALS_ACC: ("capitals accuracy", "", True),
    ADD1D: ("1-digit addition gold log-prob", "nats", True),
    ADD1D_ACC: ("1-digit addition accuracy", "", True),
    ARITH_2DS_PPL: ("2ds arithmetic perplexity", "", False),
    "val_loss_last": ("last val loss", "nats", False),
    "tokens_per_s": ("throughput", "tokens/s", True),
}

LR_AXIS = "optimizer.lr"  # the axis whose best level LRRatio and LRSpread compare


@dataclass(frozen=True, kw_only=True)
class Part:
    """One measured comparison of a claim. ``group`` names the part's place in its finding's
    combine rule; ``None`` makes it context (shown, tested, never combined)."""

    label: str
    metric: str = NLL
    published: str = ""
    group: str | None = "main"

    def references(self) -> list[tuple[str, str | None]]:
        """(axis, level or None) pairs this part needs the sweep to have."""
        return []


@dataclass(frozen=True, kw_only=True)
class Contrast(Part):
    """``other`` vs ``reference`` cells, seed-paired, on ``metric`` (``reference_metric`` for
    the reference arm when it differs). ``expect``: lower / higher (direction, ``margin`` =
    SESOI) or same (TOST, ``margin`` = equivalence margin). ``within`` pins both arms; ``per``
    splits the part into one per level of that axis; ``best_of`` puts each arm at its own best
    level of that axis by mean held-out NLL. Axes left free are averaged within each seed."""

    expect: str
    reference: Pins
    other: Pins
    margin: float
    within: Pins = ()
    per: str | None = None
    best_of: str | None = None
    reference_metric: str | None = None

    def references(self):
        pins = [(a, v) for a, v in self.reference + self.other + self.within]
        return pins + [(a, None) for a in (self.per, self.best_of) if a]


@dataclass(frozen=True, kw_only=True)
class Deterministic(Contrast):
    """A memory difference judged on the runs there are (allocator peaks repeat to MBs): beyond
    ``margin`` in the claimed direction reproduces it, beyond it the other way contradicts it;
    for "same", within the margin reproduces it."""

    metric: str = MEMORY_GB


@dataclass(frozen=True, kw_only=True)
class TimeRatio(Contrast):
    """median(other) / median(reference) time per optimizer step of the steady state (after
    warm-up; whole-run train time where records lack it) over >= 3 repeats per arm, with a
    bootstrap interval; ``margin`` is the smallest relative change of interest."""

    metric: str = STEP_SECONDS


@dataclass(frozen=True, kw_only=True)
class Matters(Part):
    """The levels of ``axis`` move ``metric``: one-way ANOVA over seeds, and the largest
    contrast between level means at least ``margin``."""

    axis: str
    margin: float
    within: Pins = ()

    def references(self):
        return [(self.axis, None), *self.within]


@dataclass(frozen=True, kw_only=True)
class Sensitivity(Part):
    """Per seed, the spread (max - min) of ``metric`` over the levels of ``over``, for the
    ``other`` level of ``axis`` minus the ``reference`` level's; seed-paired like a Contrast."""

    axis: str
    reference: str
    other: str
    over: str
    margin: float
    expect: str = "lower"

    def references(self):
        return [(self.axis, self.reference), (self.axis, self.other), (self.over, None)]


@dataclass(frozen=True, kw_only=True)
class BaseVsTuned(Part):
    """Each run's tuned score minus its own untrained base score, seed-paired."""

    expect: str
    margin: float
    within: Pins = ()
    best_of: str | None = None

    def references(self):
        return [*self.within] + ([(self.best_of, None)] if self.best_of else [])


@dataclass(frozen=True, kw_only=True)
class SeedNoise(Part):
    """F1: the pooled seed standard deviation of ``metric`` within configurations, with its
    chi-square interval; "barely moves" = the interval lies below ``margin``."""

    margin: float


@dataclass(frozen=True, kw_only=True)
class EstimateFit(Part):
    """F12: every run's dry-run estimate against its measured training peak."""

    metric: str = MEMORY
    margin: float


@dataclass(frozen=True, kw_only=True)
class Bound(Part):
    """F8: the training peak of the ``at`` cell under ``bound`` (GB)."""

    metric: str = MEMORY_GB
    at: Pins
    bound: float

    def references(self):
        return list(self.at)


@dataclass(frozen=True, kw_only=True)
class LRRatio(Part):
    """F13a: log10(lr*_other / lr*_reference), where an arm's lr* is the best level of ``axis``
    (argmin of the seed-mean ``metric`` over the grid, refined by a parabola in log10(lr) through
    the minimum and its two neighbours when it is interior). Its 95% interval is the paired
    Student-t interval over seeds of the single-seed optima's differences. Reproduced when the
    interval lies inside ``target`` ± ``margin`` (decades), contradicted when it lies entirely
    outside; an optimum on the grid's edge is inconclusive. No p-value: not in the Holm family."""

    reference: Pins
    other: Pins
    target: float
    margin: float
    axis: str = LR_AXIS
    expect: str = "ratio"

    def references(self):
        return [*self.reference, *self.other, (self.axis, None)]


@dataclass(frozen=True, kw_only=True)
class LRSpread(Part):
    """F13b: the best lr is flat over ``arms``: every pair of arms' log10 lr* difference (paired
    t over seeds, as in :class:`LRRatio`) has its 95% interval inside ± ``margin`` decades (so
    the spread max - min of lr* is below it): reproduced; one pair's interval entirely outside:
    contradicted; an optimum on the grid's edge is inconclusive."""

    arms: tuple[Pins, ...]
    margin: float
    axis: str = LR_AXIS
    expect: str = "flat"

    def references(self):
        return [pin for pins in self.arms for pin in pins] + [(self.axis, None)]


def vs(axis: str, other, reference) -> dict:
    """``reference``/``other`` pins of one axis: ``Contrast(**vs("quant", "nf4", "none"))``."""
    return {"other": ((axis, level(other)),), "reference": ((axis, level(reference)),)}


def arm(name: str) -> Pins:
    return (("arm", name),)


