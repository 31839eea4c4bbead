"""Plots: each takes one sweep's rows of the loader's DataFrame and returns a matplotlib Figure
(None when the data is not there). The report and the notebooks in ``analysis/`` share them."""

from __future__ import annotations

import itertools
import math

import pandas as pd
from matplotlib.figure import Figure

from .frame import (
    MEMORY,
    PARAM,
    axes,
    base_of,
    cells,
    config_label,
    config_means,
    label_caption,
    level,
    level_sort_key,
    normalize,
    ok_runs,
    std,
    values,
)
from .parts import ARITH_2DS_PPL, ARITH_ACCS, METRICS, NLL, PROBES, TRAIN_SECONDS
from .stats import t_interval

BEST, OTHER, MUTED = "#1f77b4", "#ff7f0e", "#999999"


def metric_label(metric: str) -> str:
    name, unit, _ = METRICS.get(metric, (metric, "", False))
    return f"{name} ({unit})" if unit else name


def score_metric(runs: pd.DataFrame) -> str | None:
    """The learning score to plot: held-out NLL, else the last val loss."""
    for metric in (NLL, "val_loss_last"):
        if len(ok_runs(runs, metric)):
            return metric
    return None


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The points no other point beats on both ``x`` and ``y`` (both minimised), sorted by x."""
    points = points.dropna(subset=[x, y]).sort_values([x, y])
    front, best_y = [], math.inf
    for index, row in points.iterrows():
        if row[y] < best_y:
            front.append(index)
            best_y = row[y]
    return points.loc[front]


def plot_pareto(runs: pd.DataFrame) -> Figure | None:
    """Training peak memory vs learning score (train time for sweeps that score nothing), one
    point per configuration, the Pareto front joined."""
    runs = normalize(runs)
    score = score_metric(runs) or (TRAIN_SECONDS if len(ok_runs(runs, TRAIN_SECONDS)) else None)
    if score is None:
        return None
    points = config_means(runs, [MEMORY, score]).dropna(subset=[MEMORY, score])
    if points.empty:
        return None
    front = pareto_front(points, MEMORY, score)
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(points[MEMORY], points[score], color=MUTED, label="configuration")
    ax.plot(front[MEMORY], front[score], "-o", color=BEST, label="Pareto front (lower is better)")
    for _, row in points.iterrows():
        ax.annotate(row["short"], (row[MEMORY], row[score]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"training peak memory (GiB); {label_caption(axes(runs))}".rstrip("; "))
    ax.set_ylabel(metric_label(score))
    ax.set_title("memory vs score")
    ax.legend(fontsize=8)
    return fig


def plot_rank_alpha_heatmap(runs: pd.DataFrame) -> Figure | None:
    """Held-out NLL over rank x alpha/r; grid points without an ok run are marked."""
    names = axes(runs)
    if "adapter.r" not in names or "adapter.alpha_over_r" not in names:
        return None
    score = score_metric(runs)
    if score is None:
        return None
    means = config_means(runs, [score])
    ranks = sorted(set(means["adapter.r"]), key=level_sort_key)
    ratios = sorted(set(means["adapter.alpha_over_r"]), key=level_sort_key)
    grid = [[math.nan] * len(ranks) for _ in ratios]
    for _, row in means.iterrows():
        grid[ratios.index(row["adapter.alpha_over_r"])][ranks.index(row["adapter.r"])] = row[score]
    fig = Figure(figsize=(1.0 + 0.9 * len(ranks), 1.4 + 0.7 * len(ratios)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap="viridis_r", aspect="auto")
    for i, j in itertools.product(range(len(ratios)), range(len(ranks))):
        value = grid[i][j]
        ax.text(j, i, "not run" if math.isnan(value) else f"{value:.4f}", ha="center",
                va="center", fontsize=7, color="black" if math.isnan(value) else "white")
    ax.set_xticks(range(len(ranks)), ranks)
    ax.set_yticks(range(len(ratios)), ratios)
    ax.set_xlabel("rank r")
    ax.set_ylabel("alpha / r")
    ax.set_title(f"{metric_label(score)} (lower is better)")
    fig.colorbar(image, ax=ax)
    return fig


def plot_optimizer_scheduler(runs: pd.DataFrame) -> Figure | None:
    """Bars per optimizer x scheduler (one group per rank): held-out NLL and peak memory."""
    names = axes(runs)
    if "optimizer" not in names or "scheduler" not in names:
        return None
    score = score_metric(runs)
    metrics = [m for m in (score, MEMORY) if m]
    means = config_means(runs, metrics)
    if means.empty:
        return None
    group = "adapter.r" if "adapter.r" in names else None
    groups = sorted(set(means[group]), key=level_sort_key) if group else ["all"]
    combos = sorted({(r["optimizer"], r["scheduler"]) for _, r in means.iterrows()})
    fig = Figure(figsize=(4.2 * len(metrics), 4), layout="constrained")
    width = 0.8 / len(combos)
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), k + 1)
        for c, (opt, sched) in enumerate(combos):
            heights = []
            for g in groups:
                match = means[(means["optimizer"] == opt) & (means["scheduler"] == sched)]
                if group:
                    match = match[match[group] == g]
                heights.append(match[metric].mean() if len(match) else math.nan)
            ax.bar([i + c * width for i in range(len(groups))], heights, width, label=f"{opt} / {sched}")
        ax.set_xticks([i + width * (len(combos) - 1) / 2 for i in range(len(groups))],
                      [f"r={g}" if group else g for g in groups])
        ax.set_ylabel(metric_label(metric))
        if metric != MEMORY:  # scores differ by a few percent: an axis from 0 would hide them
            low, high = means[metric].min(), means[metric].max()
            pad = 0.15 * (high - low) or 0.01 * abs(high) or 0.01
            ax.set_ylim(low - pad, high + pad)
            ax.set_title("axis does not start at 0", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("optimizer x scheduler")
    return fig


def plot_qlora_bars(runs: pd.DataFrame) -> Figure | None:
    """Peak memory and train time per quantization level, change vs ``none`` on each bar;
    levels whose runs all failed are labelled so."""
    runs = normalize(runs)
    axis = next((a for a in ("quant", "arm") if a in axes(runs)), None)
    if axis is None or len(axes(runs)) != 1:
        return None
    reference_level = "none" if axis == "quant" else "lora_bf16"
    means = config_means(runs, [MEMORY, TRAIN_SECONDS]).rename(columns={axis: "quant"})
    all_levels = sorted({level(v) for v in runs[PARAM + axis].dropna()},
                        key=lambda q: (q != reference_level, q))
    if means.empty:
        return None
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    for k, metric in enumerate((MEMORY, TRAIN_SECONDS)):
        ax = fig.add_subplot(1, 2, k + 1)
        by_level = dict(zip(means["quant"], means[metric], strict=True))
        heights = [by_level.get(q, math.nan) for q in all_levels]
        colors = [BEST if q == reference_level else OTHER for q in all_levels]
        ax.bar(all_levels, [0 if math.isnan(h) else h for h in heights], color=colors)
        reference = by_level.get(reference_level)
        for i, h in enumerate(heights):
            if math.isnan(h):
                ax.text(i, 0, "no ok run", ha="center", va="bottom", fontsize=8, rotation=90)
            elif reference and all_levels[i] != reference_level:
                ax.text(i, h, f"{h / reference - 1:+.1%}", ha="center", va="bottom", fontsize=8)
        ax.set_ylabel(metric_label(metric))
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"LoRA ({reference_level}) vs QLoRA: memory and runtime")
    return fig


def plot_epochs(runs: pd.DataFrame) -> Figure | None:
    """Learning score vs epochs, one line per other configuration (e.g. data set)."""
    names = axes(runs)
    score = score_metric(runs)
    if "trainer.epochs" not in names or score is None:
        return None
    means = config_means(runs, [score])
    if means.empty:
        return None
    rest = [a for a in names if a != "trainer.epochs"]
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    for key, line in means.groupby(rest, sort=True) if rest else [((), means)]:
        line = line.sort_values("trainer.epochs", key=lambda s: s.map(level_sort_key))
        label = config_label(rest, key if isinstance(key, tuple) else (key,))
        ax.plot([float(e) for e in line["trainer.epochs"]], line[score], "-o", label=label)
    ax.set_xticks(sorted({float(e) for e in means["trainer.epochs"]}))
    ax.set_xlabel("epochs")
    ax.set_ylabel(metric_label(score))
    ax.set_title("score vs epochs (lower is better)")
    ax.legend(fontsize=8)
    return fig


def plot_seed_spread(runs: pd.DataFrame) -> Figure | None:
    """Every run of configurations with repeats (or of the seeds sweep): its score, the mean,
    ± 1 std, and the 95% interval where there are >= 3 runs."""
    score = score_metric(runs)
    if score is None:
        return None
    repeated = [(key, rows) for key, rows in cells(runs, score).items() if len(rows) >= 2]
    if not repeated:
        return None
    names = axes(runs)
    fig = Figure(figsize=(max(4.5, 1.4 * len(repeated) + 2), 4), layout="constrained")
    ax = fig.add_subplot()
    for i, (_key, rows) in enumerate(sorted(repeated, key=lambda kv: [level_sort_key(x) for x in kv[0]])):
        vals = values(rows, score)
        mean = sum(vals) / len(vals)
        seeds = list(rows["run_seed"])
        ax.scatter([i] * len(vals), vals, color=MUTED, zorder=3)
        for v, s in zip(vals, seeds, strict=True):
            ax.annotate(f"seed {s}", (i, v), fontsize=7, xytext=(5, 0), textcoords="offset points")
        ax.errorbar(i - 0.15, mean, yerr=std(vals), fmt="o", color=BEST, capsize=4,
                    label="mean ± std" if i == 0 else None)
        interval = (t_interval(vals).low, t_interval(vals).high) if len(vals) >= 3 else None
        if interval:
            ax.errorbar(i - 0.3, mean, yerr=[[mean - interval[0]], [interval[1] - mean]], fmt="s",
                        color=OTHER, capsize=4, label="95% CI of the mean" if i == 0 else None)
    ax.set_xticks(range(len(repeated)), [config_label(names, k) for k, _ in
                                         sorted(repeated, key=lambda kv: [level_sort_key(x) for x in kv[0]])])
    ax.set_xlim(-0.8, len(repeated) - 0.2)
    ax.set_ylabel(metric_label(score))
    ax.set_title("seed spread")
    ax.legend(fontsize=8)
    return fig


def forgetting_metrics(runs: pd.DataFrame) -> list[str]:
    """The forgetting probes the runs scored; older records: the arithmetic scores."""
    probes = [m for m in PROBES if len(ok_runs(runs, m))]
    return probes or [m for m in (*ARITH_ACCS, ARITH_2DS_PPL) if len(ok_runs(runs, m))]


def plot_learning_forgetting(runs: pd.DataFrame) -> Figure | None:
    """Learning (held-out NLL, lower = learned more) vs forgetting (one panel per probe), one
    point per configuration, each joined to its untrained base model (a star)."""
    runs = normalize(runs)
    forgetting = forgetting_metrics(runs)
    if not len(ok_runs(runs, NLL)) or not forgetting:
        return None
    means = config_means(runs, [NLL, base_of(NLL), *forgetting, *map(base_of, forgetting)])
    fig = Figure(figsize=(4.6 * len(forgetting), 4.2), layout="constrained")
    for k, metric in enumerate(forgetting):
        ax = fig.add_subplot(1, len(forgetting), k + 1)
        base = means.dropna(subset=[base_of(NLL), base_of(metric)])
        for _, row in base.iterrows():  # base -> tuned: what training moved
            ax.plot([row[base_of(NLL)], row[NLL]], [row[base_of(metric)], row[metric]],
                    color=BEST, alpha=0.25, linewidth=0.8)
        ax.scatter(base[base_of(NLL)], base[base_of(metric)], marker="*", s=120,
                   facecolor="none", edgecolor=BEST, label="base model")
        ax.scatter(means[NLL], means[metric], color=BEST, label="tuned")
        for _, row in means.iterrows():
            ax.annotate(row["short"], (row[NLL], row[metric]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
        if metric == ARITH_2DS_PPL:
            ax.set_yscale("log")
        better = "higher" if METRICS.get(metric, ("", "", True))[2] else "lower"
        ax.set_ylabel(f"{metric_label(metric)}; {better} = less forgetting")
        ax.set_xlabel(f"held-out token NLL (lower = more learning); {label_caption(axes(runs))}".rstrip("; "))
        ax.legend(fontsize=7)
    fig.suptitle("learning vs forgetting (lines join each configuration to its base model)")
    return fig


# Per sweep, in order: (file suffix, title, plot function). A plot whose data is absent is skipped.
PLOTS = (
    ("pareto", "Memory vs score, Pareto front", plot_pareto),
    ("heatmap", "Rank x alpha heatmap", plot_rank_alpha_heatmap),
    ("bars", "Optimizer x scheduler", plot_optimizer_scheduler),
    ("memory_runtime", "LoRA vs QLoRA memory and runtime", plot_qlora_bars),
    ("score_vs_epochs", "Score vs epochs", plot_epochs),
    ("seed_spread", "Seed spread", plot_seed_spread),
    ("learning_forgetting", "Learning vs forgetting", plot_learning_forgetting),
)


