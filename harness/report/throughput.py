"""Runs per hour of whole sweeps, from their own study and records (issue 19: "trials per
GPU-hour" per sweep; issue 23: a sweep against the plain loop), not a finding.

    python -m harness.report.throughput SWEEP [SWEEP ...] [--plain-seconds S [S ...]]

SWEEP is a sweep dir or its ``.tgz`` archive. A sweep's **busy time** is the union of its Optuna
trials' intervals (asked to told), so the hours between the device calls of a resumed sweep do
not count, nor does the driver's own start before its first trial (planning, tokenizing the
data). **Runs** are the records with status ok (one per seed). Where two of the sweeps given
were busy at the same time (two drivers sharing a GPU in one call) the table says how long:
those hours count for each. With ``--plain-seconds`` (the wall seconds of plain-loop trials,
each its own process, timed on the same machine start: ``python -m harness.bench
--plain-trials N``) it adds the ratio of the sweep's runs per hour to plain trials per hour, and
the same ratio counted in optimizer steps (``--plain-steps``, each plain trial's, default 63 as
in ``--steps 63``): a sweep whose runs train 63 to 500 steps is compared step for step.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..results import extracted, load_records

# Record field -> column: medians over a sweep's ok runs. A packed run's first step (its pack's:
# compiling and recording graphs under trainer.compile) is part of its train seconds.
PHASES = {"startup_seconds": "startup s", "setup_seconds": "setup s", "train_seconds": "train s",
          "pack_first_step_seconds": "first step s", "eval_seconds": "eval s"}
PLAIN_STEPS = 63  # optimizer steps of a plain-loop trial, as `python -m harness.bench --steps 63` times it
# nvidia-smi's samples in a sweep dir: the driver's (sweeps.gpu_use), and those the GPU kit's
# sweep.sh wrote before the driver took them (docs/findings/gpu_kit).
GPU_USE_FILES = ("gpu_use.*.csv", "smi.*.csv")
# A pack's seconds by phase (harness.packing.train_pack's records), as `pack s` columns' shares.
PACK_PHASES = ("start-up", "set-up", "first step", "training", "scoring", "rest")
Interval = tuple[datetime, datetime]


def merged(intervals: list[Interval]) -> list[Interval]:
    """The union of ``intervals`` as disjoint intervals, in time order."""
    out: list[Interval] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def seconds(intervals: list[Interval]) -> float:
    return sum((end - start).total_seconds() for start, end in intervals)


def overlap(a: list[Interval], b: list[Interval]) -> float:
    """Seconds in both unions (each a :func:`merged` list)."""
    return sum(max(0.0, (min(e1, e2) - max(s1, s2)).total_seconds()) for s1, e1 in a for s2, e2 in b)


def study_intervals(sweep_dir: Path) -> tuple[list[Interval], int]:
    """The merged intervals of every study's trials in the sweep dir's ``optuna.db``, and how
    many trials have no known end (:func:`trial_end`)."""
    import optuna

    db = sweep_dir / "optuna.db"
    if not db.is_file():
        raise FileNotFoundError(f"{sweep_dir}: no optuna.db (a sweep dir, or its archive, has one)")
    storage = f"sqlite:///{db.resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = [t for name in optuna.get_all_study_names(storage)
              for t in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)]
    offset = driver_utc_offset(trials)
    spans, open_trials = [], 0
    for trial in trials:
        end = trial_end(trial, offset)
        if trial.datetime_start and end:
            spans.append((trial.datetime_start, end))
        elif trial.datetime_start:
            open_trials += 1
    return merged(spans), open_trials


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc).replace(tzinfo=None)


def driver_utc_offset(trials) -> timedelta | None:
    """How far the drivers' clock was from UTC. Optuna stamps a trial's start and end in the
    driver's local time, with no zone; the sweep's heartbeat (sweeps.study.heartbeat) is epoch
    seconds. A trial that finished had its last beat shortly before its end, so their
    difference, to the nearest quarter hour, is the zone's offset. None: no such trial."""
    offsets = [(t.datetime_complete - _utc(float(t.system_attrs["heartbeat"]))).total_seconds() for t in trials
               if t.datetime_complete and t.system_attrs.get("heartbeat") is not None
               and t.user_attrs.get("status") != "lost"]
    return timedelta(minutes=15 * round(statistics.median(offsets) / 900)) if offsets else None


def trial_end(trial, offset: timedelta | None) -> datetime | None:
    """When a trial stopped using the GPU. One its driver lost is failed by the next driver to
    start (sweeps.study.reap_stale), hours later, and one never reaped is still marked running:
    each ends at its last heartbeat, in the drivers' clock (``offset``). None where that is
    unknown, or falls outside the trial's own start and recorded end."""
    if trial.user_attrs.get("status") != "lost" and trial.datetime_complete:
        return trial.datetime_complete
    beat = trial.system_attrs.get("heartbeat")
    if beat is None or offset is None or trial.datetime_start is None:
        return None
    end = _utc(float(beat)) + offset
    if end < trial.datetime_start or (trial.datetime_complete and end > trial.datetime_complete):
        return None
    return end


def sweep_throughput(sweep_dir: Path, label: str) -> dict:
    """One sweep's busy time, runs and where a run's time went (medians over its ok runs; a
    packed run's start-up, set-up and training are its pack's)."""
    intervals, open_trials = study_intervals(sweep_dir)
    frame = load_records(sweep_dir)
    if not len(frame):
        raise FileNotFoundError(f"{sweep_dir}: no run records")
    ok = frame[frame["status"] == "ok"]
    busy = seconds(intervals)
    devices = sorted(set(ok["device.name"].dropna())) if "device.name" in ok.columns else []
    packed = int(ok["packed"].eq(True).sum()) if "packed" in ok.columns else 0  # NaN where not packed
    row = {"sweep": label, "device": ", ".join(devices) or "-", "runs ok": len(ok), "runs": len(frame), "packed": packed,
           "packs": pack_sizes(ok), "busy s": round(busy), "sessions": len(intervals), "open trials": open_trials,
           "runs per hour": round(len(ok) * 3600 / busy, 1) if busy else None, "intervals": intervals}
    steps = ok["optimizer_steps"].dropna().sum() if "optimizer_steps" in ok.columns else 0
    row["steps per hour"] = round(steps * 3600 / busy) if busy and steps else None
    for phase, column in PHASES.items():
        values = ok[phase].dropna() if phase in ok.columns else []
        row[column] = round(statistics.median(values), 1) if len(values) else None
    row.update(gpu_use(sweep_dir, intervals))
    row["pack phases"] = pack_phases(frame)
    return row


def gpu_use(sweep_dir: Path, intervals: list[Interval]) -> dict:
    """The GPUs' use in the sweep's busy time, from nvidia-smi's samples in the sweep dir
    (:data:`GPU_USE_FILES`; the driver's clock, as the study's): the mean and median
    ``utilization.gpu`` of the samples inside busy time, every GPU's, and the most memory any
    GPU used then. None each where no sample falls inside."""
    import pandas as pd

    samples = []
    for path in sorted(p for pattern in GPU_USE_FILES for p in sweep_dir.glob(pattern)):
        try:
            frame = pd.read_csv(path, skipinitialspace=True, dtype=str)
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            continue  # a sampler that never wrote, or a file cut short mid-line
        column = {name.split(" ")[0]: name for name in frame.columns}
        if not {"timestamp", "utilization.gpu", "memory.used"} <= column.keys():
            continue
        samples.append(pd.DataFrame({
            "at": pd.to_datetime(frame[column["timestamp"]], format="%Y/%m/%d %H:%M:%S.%f", errors="coerce"),
            # values as nvidia-smi writes them, with units ("44 %", "80750 MiB") or without
            "use": pd.to_numeric(frame[column["utilization.gpu"]].str.extract(r"([\d.]+)")[0], errors="coerce"),
            "mib": pd.to_numeric(frame[column["memory.used"]].str.extract(r"([\d.]+)")[0], errors="coerce")}))
    inside = pd.concat(samples).dropna() if samples else None
    if inside is not None:
        inside = inside[[any(start <= at <= end for start, end in intervals) for at in inside["at"]]]
    if inside is None or not len(inside):
        return {"GPU use % mean": None, "GPU use % median": None, "GPU memory max GiB": None}
    return {"GPU use % mean": round(float(inside["use"].mean())), "GPU use % median": round(float(inside["use"].median())),
            "GPU memory max GiB": round(float(inside["mib"].max()) / 1024, 1)}


def pack_phases(frame) -> dict | None:
    """Where the packs' time went: pack-seconds by :data:`PACK_PHASES`, summed over the packs
    (each counted once by its log; packs running side by side each count theirs). A pack's
    start-up and set-up are its members', its first step its first optimizer step (compiling
    and recording graphs under trainer.compile), its training the rest of its train seconds, its
    scoring its members' scoring seconds, and the rest what its process did besides (validation,
    saving, base scores read, bookkeeping) until its last record. None where no run packed."""
    needed = ["pack_log", "startup_seconds", "setup_seconds", "train_seconds", "total_seconds"]
    if any(name not in frame.columns for name in needed):
        return None
    runs = frame.dropna(subset=needed)
    if not len(runs):
        return None
    totals = dict.fromkeys(PACK_PHASES, 0.0)
    for _, pack in runs.groupby("pack_log"):
        first = float(pack["pack_first_step_seconds"].max()) if "pack_first_step_seconds" in pack.columns else 0.0
        first = 0.0 if math.isnan(first) else first  # an eager pack records none
        parts = {"start-up": pack["startup_seconds"].max(), "set-up": pack["setup_seconds"].max(), "first step": first,
                 "training": pack["train_seconds"].max() - first,
                 "scoring": pack["eval_seconds"].sum() if "eval_seconds" in pack.columns else 0.0}
        whole = pack["total_seconds"].max() + parts["start-up"]
        for phase, value in {**parts, "rest": whole - sum(parts.values())}.items():
            totals[phase] += float(value)
    return totals


def pack_sizes(ok) -> str | None:
    """The packs the ok runs trained in, as ``runs x packs`` from the largest (``5x6 4x4``: six
    packs of five runs, four of four), each pack counted once by its log; None where none packed.
    A run that trained alone after its batch's full packs shows as the gap between ``packed`` and
    ``runs ok``."""
    if "pack_log" not in ok.columns or "pack_size" not in ok.columns:
        return None
    packs = ok.dropna(subset=["pack_log", "pack_size"]).groupby("pack_log")["pack_size"].first()
    counts = packs.astype(int).value_counts().sort_index(ascending=False)
    return " ".join(f"{size}x{n}" for size, n in counts.items()) or None


def with_shared_time(rows: list[dict]) -> list[dict]:
    """Each row's seconds of busy time during which another of the sweeps was busy too."""
    for row in rows:
        others = merged([span for other in rows if other is not row for span in other["intervals"]])
        row["shared s"] = round(overlap(row["intervals"], others))
    return rows


def render(rows: list[dict], plain_seconds: list[float], plain_steps: int = PLAIN_STEPS) -> str:
    import pandas as pd

    plain_per_hour = 3600 / statistics.mean(plain_seconds) if plain_seconds else None
    table = pd.DataFrame([{k: v for k, v in r.items() if k not in ("intervals", "pack phases")} for r in rows])
    table = table.astype(object).where(table.notna(), None)  # a phase no run has: "-", not nan
    lines = ["# Runs per hour of busy time", "",
             "- Busy time: the union of each sweep's trial intervals in its study (asked to told); gaps between "
             "device calls and the driver's start before its first trial are not counted.",
             "- Phases: medians over the ok runs (per run; a packed run's start-up, set-up and training are its pack's).",
             "- shared s: busy seconds during which another sweep given here was busy too (both count them).",
             "- GPU use: nvidia-smi's samples (every 5 s) inside the busy time, every GPU's: the share of each sample's "
             "period in which any kernel ran (not how full the GPU was), and the most memory a GPU used."]
    if plain_per_hour:
        table["x plain"] = (table["runs per hour"] / plain_per_hour).round(2)
        table["x plain, per step"] = (table["steps per hour"] / (plain_steps * plain_per_hour)).round(2)
        lines.append(f"- Plain loop: {len(plain_seconds)} trial(s) of {plain_steps} optimizer steps, mean "
                     f"{statistics.mean(plain_seconds):.1f} s, {plain_per_hour:.1f} per hour; x plain = runs per hour "
                     "/ that; x plain, per step = optimizer steps per hour / the plain trials' (a step's tokens "
                     "and adapter size are each sweep's own).")
    out = [*lines, "", table.to_markdown(index=False, missingval="-")]
    phases = [(r["sweep"], r["pack phases"]) for r in rows if r.get("pack phases")]
    if phases:
        out += ["", "## Where the packs' time went", "",
                "Pack-seconds by phase, summed over each sweep's packs (packs side by side each count theirs), "
                "and each phase's share.", "",
                pd.DataFrame([{"sweep": name, "pack s": round(sum(p.values())),
                               **{f"{phase} %": round(100 * p[phase] / sum(p.values())) for phase in PACK_PHASES}}
                              for name, p in phases]).to_markdown(index=False)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.report.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep dirs or their .tgz archives")
    parser.add_argument("--plain-seconds", nargs="+", type=float, default=[],
                        help="wall seconds of plain-loop trials timed on the same machine start")
    parser.add_argument("--plain-steps", type=int, default=PLAIN_STEPS,
                        help=f"optimizer steps of each plain-loop trial (harness.bench --steps; default {PLAIN_STEPS})")
    args = parser.parse_args(argv)
    if any(s <= 0 for s in args.plain_seconds):
        print("error: --plain-seconds: each must be > 0", file=sys.stderr)
        return 2
    if args.plain_steps <= 0:
        print("error: --plain-steps: must be > 0", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="harness-throughput-") as work:
        try:
            rows = [sweep_throughput(extracted(p, Path(work) / str(i)), p.name.split(".")[0])
                    for i, p in enumerate(args.sweeps)]
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(render(with_shared_time(rows), args.plain_seconds, args.plain_steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
