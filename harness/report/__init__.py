"""The findings report: ``python -m harness.report SWEEP_DIR... [--out DIR] [--note TEXT]``.

Loads run records through :func:`harness.results.load_records`, and for every finding
(FINDINGS.md) puts the published claim next to the measured effects, their seed-paired
intervals, and a verdict from declared rules:

- :mod:`.claims`: the findings, their parts, metrics and declared margins, by sweep;
- :mod:`.stats`: the tests (paired t, TOST, ANOVA, bootstrap, Holm);
- :mod:`.frame`: the DataFrame vocabulary; :mod:`.effects`: measuring parts;
- :mod:`.verdicts`: Holm within a finding and the combine rules;
- :mod:`.plots`, :mod:`.render`, :mod:`.document`: the figures and the Markdown/HTML page.
"""

from .claims import (
    ADD1D,
    AGREE,
    ARITH_2DS_PPL,
    ARITH_ACCS,
    CAPITALS,
    CLAIMS,
    NLL,
    PROBES,
    QUANT_NLL,
    SWEEP_CLAIMS,
    TRAIN_SECONDS,
    check_claims,
)
from .document import build_report, configuration_table, not_ok_table, status_counts
from .effects import PartResult, describe, fmt
from .frame import (
    MEMORY,
    MEMORY_GB,
    axes,
    config_means,
    level,
    normalize,
    ok_runs,
    sweep_names,
    sweep_runs,
    values,
)
from .plots import (
    PLOTS,
    pareto_front,
    plot_epochs,
    plot_learning_forgetting,
    plot_optimizer_scheduler,
    plot_pareto,
    plot_qlora_bars,
    plot_rank_alpha_heatmap,
    plot_seed_spread,
)
from .stats import CONTRADICTED, INCONCLUSIVE, NOT_MEASURED, REPRODUCED
from .verdicts import (
    best_configuration_note,
    evaluate_finding,
    findings_of,
    parts_frame,
    seed_spread_for,
)

__all__ = [
    "ADD1D", "AGREE", "ARITH_2DS_PPL", "ARITH_ACCS", "CAPITALS", "CLAIMS", "CONTRADICTED",
    "INCONCLUSIVE", "MEMORY", "MEMORY_GB", "NLL", "NOT_MEASURED", "PLOTS", "PROBES", "QUANT_NLL",
    "REPRODUCED", "SWEEP_CLAIMS", "TRAIN_SECONDS", "PartResult", "axes", "best_configuration_note",
    "build_report", "check_claims", "config_means", "configuration_table", "describe",
    "evaluate_finding", "findings_of", "fmt", "level", "normalize", "not_ok_table", "ok_runs",
    "pareto_front", "parts_frame", "plot_epochs", "plot_learning_forgetting",
    "plot_optimizer_scheduler", "plot_pareto", "plot_qlora_bars", "plot_rank_alpha_heatmap",
    "plot_seed_spread", "seed_spread_for", "status_counts", "sweep_names", "sweep_runs", "values",
]
