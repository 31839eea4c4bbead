"""Two sets of runs of the same configurations side by side: the A/B check of a way of running
(packed vs alone, compiled vs eager), not a finding.

    python -m harness.report.compare NEW REFERENCE [--metric eval.harness_heldout.token_nll]

NEW and REFERENCE are sweep dirs (or their ``.tgz`` archives). Runs pair by their sweep
parameters and seed; per configuration the table gives each side's mean over its paired seeds,
the mean seed-paired difference (new - reference) and the reference's seed spread. The rule,
printed beside the table: a configuration agrees when its mean paired difference is within the
reference's pooled seed standard deviation (issue 23: "within the seed spread of the same
configuration run unpacked"). Configurations on one side only are named, not compared.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

from ..results import extracted, load_records
from .measured import pooled_sigma
from .stats import t_interval

SEED = "sweep.seed"


def load(path: Path, work: Path):
    """The ok runs of a sweep dir or of its archive (unpacked into ``work``)."""
    frame = load_records(extracted(path, work / path.name.split(".")[0]))
    return frame[frame["status"] == "ok"] if len(frame) else frame


def compare(new, reference, metric: str):
    """Per configuration: n paired seeds, each side's mean, the mean paired difference, the
    reference's seed standard deviation. Returns (table, pooled reference seed sigma, the
    configurations on one side only, the seed pairs)."""
    for name, frame in (("new", new), ("reference", reference)):
        if metric not in frame.columns or frame[metric].isna().all():
            raise ValueError(f"{name}: no ok run has {metric}")
    axes = sorted({c for f in (new, reference) for c in f.columns if c.startswith("sweep.params.")} - {"sweep.params_order"})
    new, reference = (f.assign(**{a: None for a in axes if a not in f.columns}) for f in (new, reference))
    keys = [*axes, SEED]
    pairs = new[[*keys, metric]].merge(reference[[*keys, metric]], on=keys, suffixes=(".new", ".reference"))
    pairs = pairs.dropna(subset=[f"{metric}.new", f"{metric}.reference"])
    pairs["difference"] = pairs[f"{metric}.new"] - pairs[f"{metric}.reference"]
    pooled = pooled_sigma(reference.set_index([*axes, SEED])[metric]) or math.nan
    table = pairs.groupby(axes, dropna=False).agg(seeds=(SEED, "count"), new=(f"{metric}.new", "mean"),
                                                   reference=(f"{metric}.reference", "mean"),
                                                   difference=("difference", "mean")).reset_index()
    spread = reference.groupby(axes, dropna=False)[metric].std().rename("reference_seed_std").reset_index()
    table = table.merge(spread, on=axes, how="left")
    table["within_seed_spread"] = table["difference"].abs() <= pooled
    configs = {name: set(map(tuple, f[axes].astype(str).drop_duplicates().values)) for name, f in
               (("new", new), ("reference", reference))}
    only = {"new": sorted(configs["new"] - configs["reference"]), "reference": sorted(configs["reference"] - configs["new"])}
    return table, pooled, only, pairs


def render(table, pooled: float, only: dict, pairs, metric: str) -> str:
    agree = int(table["within_seed_spread"].sum())
    interval = t_interval(pairs["difference"])
    mean, low, high = interval.mean, interval.low, interval.high
    lines = [f"# {metric}: new vs reference", "",
             f"- Rule: a configuration agrees when |mean seed-paired difference| <= the reference's pooled seed "
             f"standard deviation ({pooled:.4g}).",
             f"- Agree: {agree} of {len(table)} configurations; {len(pairs)} seed pairs; mean difference "
             f"{mean:+.4g} (95% t interval {low:+.4g} to {high:+.4g}).", ""]
    lines += [f"- Only in {side}: {', '.join('/'.join(k) for k in keys)}" for side, keys in only.items() if keys]
    lines += ["", table.to_markdown(index=False, floatfmt=".5g")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.report.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("new", type=Path)
    parser.add_argument("reference", type=Path)
    parser.add_argument("--metric", default="eval.harness_heldout.token_nll")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="harness-compare-") as work:
        try:
            frames = [load(p, Path(work) / side) for side, p in (("new", args.new), ("reference", args.reference))]
            table, pooled, only, pairs = compare(*frames, args.metric)
        except (FileNotFoundError, ValueError, KeyError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(render(table, pooled, only, pairs, args.metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
