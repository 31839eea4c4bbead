"""The findings report: ``python -m harness.report SWEEP_DIR... [--out DIR] [--note TEXT]``.

Loads run records through :func:`harness.results.load_records`, and for every finding
(FINDINGS.md) puts the published claim next to the measured effects, their seed-paired
intervals, and a verdict from declared rules:

- :mod:`.claims`: the findings, their parts and declared margins, by sweep;
- :mod:`.parts`: the metrics claims name and the kinds of part;
- :mod:`.stats`: the tests (paired t, TOST, ANOVA, bootstrap, Holm);
- :mod:`.frame`: the DataFrame vocabulary; :mod:`.effects`: measuring parts (:mod:`.measured`:
  the result row, arms and seed-paired differences; :mod:`.lr_optimum`: best learning rates);
- :mod:`.verdicts`: Holm within a finding and the combine rules;
- :mod:`.plots`, :mod:`.render`, :mod:`.document`: the figures and the Markdown/HTML page.

The names below load with their submodule on first use: the sweep driver reads the claims
(:func:`check_claims`) when it plans a sweep, and must not pay for pandas' plots, scipy's
tests and jinja2 on every ``+sweep=...`` command, a bad one included.
"""

from __future__ import annotations

import importlib

# name -> the submodule that defines it
_EXPORTS = {
    "CLAIMS": "claims", "SWEEP_CLAIMS": "claims", "check_claims": "claims",
    "ADD1D": "parts", "AGREE": "parts", "ARITH_2DS_PPL": "parts", "ARITH_ACCS": "parts", "CAPITALS": "parts",
    "NLL": "parts", "PROBES": "parts", "QUANT_NLL": "parts", "TRAIN_SECONDS": "parts",
    "build_report": "document", "configuration_table": "document", "not_ok_table": "document",
    "status_counts": "document",
    "PartResult": "measured", "describe": "measured", "fmt": "measured",
    "MEMORY": "frame", "MEMORY_GB": "frame", "axes": "frame", "config_means": "frame", "level": "frame",
    "normalize": "frame", "ok_runs": "frame", "sweep_names": "frame", "sweep_runs": "frame", "values": "frame",
    "PLOTS": "plots", "pareto_front": "plots", "plot_epochs": "plots", "plot_learning_forgetting": "plots",
    "plot_optimizer_scheduler": "plots", "plot_pareto": "plots", "plot_qlora_bars": "plots",
    "plot_rank_alpha_heatmap": "plots", "plot_seed_spread": "plots",
    "CONTRADICTED": "stats", "INCONCLUSIVE": "stats", "NOT_MEASURED": "stats", "REPRODUCED": "stats",
    "best_configuration_note": "verdicts", "evaluate_finding": "verdicts", "findings_of": "verdicts",
    "parts_frame": "verdicts", "seed_spread_for": "verdicts",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
