"""``python -m harness.run +sweep=NAME dry_run=true``: the sweep's plan without running it.

Every configuration the sweep would run (all grid points; for a sampler over ranges, the
points that probe both ends of every range), each with its parameter count and dry-run memory
estimate on a GPU (:func:`harness.estimate.estimate_run`), and how the runs would be grouped.
Nothing is written: no sweep dir, no study, no trial folder.
"""

from __future__ import annotations

from pathlib import Path

from harness.schema import RunConfig

from .plan import SweepPlan, plan_points


def preview_rows(plan: SweepPlan) -> list[dict]:
    """One row per listed configuration: its params, trainable parameters and estimated peak (GiB)."""
    from harness.estimate import estimate_run  # imports torch: after the plan's checks

    rows = []
    for params, run in zip(plan_points(plan.axes, plan.grid), plan.listed, strict=True):
        est = estimate_run(run, device="cuda")
        rows.append({**params, "trainable_params": est["trainable_params"],
                     "estimate_gib": est["memory_estimate"]["total_gib"]})
    return rows


def preview_text(run: RunConfig, user_overrides: list[str], sweep_dir: Path) -> str:
    """The plan of sweep ``run.sweep`` as printed: a table of its configurations and a summary."""
    import pandas as pd

    from .driver import plan_sweep

    plan = plan_sweep(run.sweep, user_overrides, sweep_dir)
    rows = preview_rows(plan)
    listed = "every configuration" if plan.grid is not None else \
        f"the points probing the ends of its ranges (the {plan.cfg.sampler} sampler draws {plan.planned})"
    how = (f"compatible trials packed, up to {plan.pack_size} runs per process" if plan.pack
           else "one process per run" + (" with a GPU to itself (sweep.exclusive_gpu: it measures runtime)" if plan.exclusive_gpu else ""))
    lines = [f"sweep {plan.cfg.name} (dry run, {listed}; estimates for a GPU, precision as it resolves there):",
             pd.DataFrame(rows).to_string(index=False),
             f"{plan.planned} configuration(s) x {len(plan.seeds)} seed(s) = {plan.planned * len(plan.seeds)} run(s); "
             f"{how}; largest estimate {max(r['estimate_gib'] for r in rows):.2f} GiB per run",
             f"nothing was written; without dry_run=true it runs in {sweep_dir}"]
    return "\n".join(lines)
