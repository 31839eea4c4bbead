"""The newer claims F13-F15 on constructed records with known optima and effects: the best
learning rate of an arm (argmin over the grid, refined by a parabola in log10 lr; an optimum on
the grid's edge is inconclusive), the ratio and rank-spread rules of F13 (reproduced,
contradicted, inconclusive), F14's matched-parameter contrast and F15's variants at high rank.

Records go through the project's record writer and loader (``tests.test_report``'s helpers); no
model runs here. The sweeps' own designs are checked against their claims in
``tests/test_sweeps.py`` (every named sweep plans and validates at both scales)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from harness import report
from harness.report import claims, effects, stats
from tests.test_report import by_label, frame_of, grid

LRS = [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]  # conf/sweep/lr_rank.yaml
METHODS = ["full", "lora_r4", "lora_r16", "lora_r64"]
RATIO = "LoRA r={} vs full fine-tuning: best lr ratio"
SPREAD = "spread of the best lr over LoRA ranks 4, 16, 64"


# --- the estimator ---------------------------------------------------------------------------


def test_an_interior_optimum_is_refined_to_the_parabola_vertex_on_an_uneven_grid():
    x = np.log10(LRS)
    true = math.log10(4.2e-4)  # between grid points, nearer 3e-4
    value, how = stats.curve_optimum(x, 1.4 + 0.03 * (x - true) ** 2)
    assert how == stats.REFINED and value == pytest.approx(true, abs=1e-9)
    grid_only = x[int(np.argmin(1.4 + 0.03 * (x - true) ** 2))]
    assert abs(grid_only - true) > 0.1  # the refinement is what gets it right


def test_an_edge_optimum_is_flagged_and_a_diverged_neighbour_stops_the_refinement():
    x = np.log10(LRS)
    assert stats.curve_optimum(x, -x) == (pytest.approx(x[-1]), stats.HIGH_EDGE)
    assert stats.curve_optimum(x, x) == (pytest.approx(x[0]), stats.LOW_EDGE)
    assert stats.censored_optimum(x, -x) == math.inf and stats.censored_optimum(x, x) == -math.inf
    y = np.array([5.0, 4.0, 3.0, 2.0, 1.0, math.inf, math.inf])  # diverged above 3e-3
    assert stats.curve_optimum(x, y) == (pytest.approx(x[4]), stats.GRID_POINT)
    assert math.isnan(stats.curve_optimum(x, [math.inf] * 7)[0])


def test_band_decision_and_the_bootstrap_interval():
    assert stats.band_decision(0.7, 1.2, 0.5, 1.5) == stats.REPRODUCED
    assert stats.band_decision(-0.3, 0.2, 0.5, 1.5) == stats.CONTRADICTED
    assert stats.band_decision(1.6, 2.0, 0.5, 1.5) == stats.CONTRADICTED
    assert stats.band_decision(0.3, 0.9, 0.5, 1.5) == stats.INCONCLUSIVE
    values = np.array([1.0, 2.0, 3.0])
    low, high = stats.seed_bootstrap(3, lambda rows: values[rows].mean())
    assert 1.0 <= low < 2.0 < high <= 3.0  # within the single-seed range, around the mean
    assert stats.seed_bootstrap(3, lambda rows: math.nan) == (-math.inf, math.inf)


def simulated_arm(rng, best: float) -> effects.LRCurve:
    """3 seeds of a curve 0.04 nats per decade^2 around ``best`` (log10 lr), with a seed offset
    and 0.003 nats of run noise per point."""
    x = np.log10(LRS)
    values = 1.4 + 0.04 * (x - best) ** 2 + rng.normal(0, 0.004, (3, 1)) + rng.normal(0, 0.003, (3, len(x)))
    return effects.LRCurve(pd.DataFrame(values), x, [])


def rates(decide, n_sets: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    verdicts = [decide(rng) for _ in range(n_sets)]
    return {v: verdicts.count(v) / n_sets for v in set(verdicts)}


def ratio_rule_rates(true_log_ratio: float, n_sets: int = 400, seed: int = 0) -> dict[str, float]:
    """How often the ratio rule (paired t over seeds of single-seed optima, against [0.5, 1.5])
    says each verdict when the true log10 ratio is ``true_log_ratio``."""
    def decide(rng):
        ci = effects.optimum_difference(simulated_arm(rng, -3.7), simulated_arm(rng, -3.7 + true_log_ratio), 3)
        return stats.band_decision(ci.low, ci.high, 0.5, 1.5)
    return rates(decide, n_sets, seed)


def flat_rule_rates(true_spread: float, n_sets: int = 300, seed: int = 0) -> dict[str, float]:
    """The same for the flat-in-rank rule over three arms whose optima span ``true_spread``."""
    def decide(rng):
        arms = [simulated_arm(rng, -2.7 + k * true_spread / 2) for k in range(3)]
        return effects.flat_decision([effects.optimum_difference(arms[a], arms[b], 3)
                                      for a in range(3) for b in range(a + 1, 3)], 0.5)
    return rates(decide, n_sets, seed)


def test_the_ratio_rule_error_rates_at_the_band_edge_and_its_power():
    # On the band's edge a false 'reproduced' must stay near its nominal 2.5% (a percentile
    # bootstrap over 3 seeds, tried first, gave 17% here: it cannot reach past the single-seed
    # optima, so it undercovers; it only describes each arm's lr*).
    assert ratio_rule_rates(1.5).get(stats.REPRODUCED, 0) <= 0.06
    assert ratio_rule_rates(1.0, seed=1).get(stats.REPRODUCED, 0) >= 0.85  # x10: found
    assert ratio_rule_rates(0.0, seed=2).get(stats.CONTRADICTED, 0) >= 0.85  # x1: refuted


def test_the_flat_in_rank_rule_error_rate_at_the_margin_and_its_power():
    assert flat_rule_rates(0.5).get(stats.REPRODUCED, 0) <= 0.06  # spread on the margin
    assert flat_rule_rates(0.0, seed=1).get(stats.REPRODUCED, 0) >= 0.75  # truly flat


# --- F13 on records --------------------------------------------------------------------------


def lr_rank_records(optimum: dict, seeds=(1, 2, 3), diverge_above: float | None = 1e-2,
                    curvature: float = 0.04) -> list[dict]:
    """NLL = 1.40 + curvature (log10 lr - log10 lr*_arm,seed)^2 + a seed offset; ``optimum[m]`` is
    the arm's lr* (or a function of the seed); full fine-tuning diverges above ``diverge_above``."""

    def value(point, seed):
        method, lr = point["method"], point["optimizer.lr"]
        if method == "full" and diverge_above is not None and lr > diverge_above:
            return {"status": "diverged"}
        best = optimum[method](seed) if callable(optimum[method]) else optimum[method]
        return {"nll": 1.40 + curvature * (math.log10(lr) - math.log10(best)) ** 2
                + 0.004 * math.sin(3.1 * seed) + 0.001 * math.cos(seed * lr * 1e4)}

    return grid("lr_rank", {"method": METHODS, "optimizer.lr": LRS}, value, seeds)


def log10_of(effect: str) -> float:
    """The log10 ratio in an effect like 'x9.03 (log10 +0.956)'."""
    return float(effect.split("log10 ")[1].rstrip(")"))


def f13(tmp_path, records):
    frame = frame_of(tmp_path, ("lr_rank", records))
    verdict, rule, parts = report.evaluate_finding("F13", frame)
    return verdict, rule, by_label(parts)


def test_f13_reproduced_when_lora_is_ten_times_full_at_every_rank(tmp_path):
    records = lr_rank_records({"full": 2e-4, "lora_r4": 2.2e-3, "lora_r16": 1.8e-3, "lora_r64": 2e-3})
    assert sum(r["status"] == "diverged" for r in records) == 3  # full FT at 3e-2, every seed
    verdict, rule, parts = f13(tmp_path, records)
    assert verdict == stats.REPRODUCED, rule
    ratio = parts[RATIO.format(16)]
    assert ratio.verdict == stats.REPRODUCED
    assert "refined" in ratio.reference and "refined" in ratio.other
    assert log10_of(ratio.effect) == pytest.approx(math.log10(9), abs=0.03)  # 1.8e-3 / 2e-4
    assert "paired t over seeds" in ratio.interval and ratio.p == "-"  # not in the Holm family
    assert "95% bootstrap CI" in ratio.reference  # each arm's lr*, described
    spread = parts[SPREAD]
    assert spread.verdict == stats.REPRODUCED
    assert float(spread.effect.split()[1]) == pytest.approx(math.log10(2.2 / 1.8), abs=0.03)
    assert "ratio: reproduced; rank: reproduced" in rule


def test_f13_contradicted_when_the_optima_coincide_and_move_with_rank(tmp_path):
    records = lr_rank_records({"full": 3e-4, "lora_r4": 3.3e-4, "lora_r16": 1.5e-3, "lora_r64": 1.5e-2})
    verdict, rule, parts = f13(tmp_path, records)
    assert parts[RATIO.format(4)].verdict == stats.CONTRADICTED  # x1.1: below the 3x-30x band
    assert parts[RATIO.format(16)].verdict == stats.REPRODUCED  # x5: inside it
    assert parts[RATIO.format(64)].verdict == stats.CONTRADICTED  # x50: above it
    assert parts[SPREAD].verdict == stats.CONTRADICTED  # 1.66 decades over ranks
    assert verdict == stats.CONTRADICTED and "rank: contradicted" in rule


def test_f13_inconclusive_when_the_seeds_disagree_about_the_optimum(tmp_path):
    # LoRA r=16's optimum moves between seeds from x2 to x8 of full's: the interval straddles 0.5.
    per_seed = {1: 4e-4, 2: 1.6e-3, 3: 8e-4}
    records = lr_rank_records({"full": 2e-4, "lora_r4": 2e-3, "lora_r16": per_seed.__getitem__,
                               "lora_r64": 2e-3}, curvature=0.2)
    _, _, parts = f13(tmp_path, records)
    ratio = parts[RATIO.format(16)]
    assert ratio.verdict == stats.INCONCLUSIVE, (ratio.interval, ratio.pairs)
    low, high = (float(v) for v in ratio.interval.split("log10 ")[1].split(" (")[0].split(" to "))
    assert low < 0.5 < high
    assert len(ratio.pairs) == 3 and ratio.pairs[0].startswith("seed 1: lr* ")


def test_f13_an_optimum_at_the_grid_edge_is_inconclusive(tmp_path):
    records = lr_rank_records({"full": 2e-4, "lora_r4": 2e-3, "lora_r16": 2e-3, "lora_r64": 1e-1})
    verdict, _, parts = f13(tmp_path, records)
    for label in (RATIO.format(64), SPREAD):
        assert parts[label].verdict == "inconclusive (optimum at the grid edge)"
        assert "method=lora_r64 at the high edge (0.03)" in parts[label].rule
    edge = parts[RATIO.format(64)]
    assert "high edge" in edge.other and "a bound, not an estimate" in edge.effect
    assert edge.pairs[0].endswith("/ 0.03 (high edge)")
    assert parts[RATIO.format(4)].verdict == stats.REPRODUCED
    assert verdict == stats.INCONCLUSIVE


def test_f13_with_two_seeds_is_underpowered(tmp_path):
    records = lr_rank_records({"full": 2e-4, "lora_r4": 2e-3, "lora_r16": 2e-3, "lora_r64": 2e-3},
                              seeds=(1, 2))
    verdict, _, parts = f13(tmp_path, records)
    assert parts[RATIO.format(4)].verdict == "inconclusive (underpowered: 2 seeds)"
    assert verdict == "inconclusive (underpowered)"


def test_f13_a_seed_missing_a_level_is_dropped_not_guessed(tmp_path):
    records = lr_rank_records({"full": 2e-4, "lora_r4": 2e-3, "lora_r16": 2e-3, "lora_r64": 2e-3},
                              seeds=(1, 2, 3, 4))
    lost = next(r for r in records if r["sweep"]["params"] == {"method": "full", "optimizer.lr": 1e-3}
                and r["seed"] == 4)
    lost.update(status="failed", error="RuntimeError: boom")
    for key in ("eval", "eval_base"):
        lost.pop(key)
    _, _, parts = f13(tmp_path, records)
    ratio = parts[RATIO.format(4)]
    assert ", 3 seeds)" in ratio.reference and ", 3 seeds)" in ratio.other  # the seeds both arms have
    assert "seeds dropped (a level not measured): 4" in ratio.pairs
    assert ratio.verdict == stats.REPRODUCED
    spread = parts[SPREAD]  # the LoRA arms lost nothing: all 4 seeds
    assert len(spread.pairs) == 4


def test_f13_on_a_sweep_run_in_part_is_not_measured_rather_than_inconclusive(tmp_path):
    # As lr_rank stood on 2026-12-06: two lr levels per arm at most, fewer than a best lr needs.
    # Nothing was judged, so the finding says so; a part measured beside them makes it inconclusive.
    records = lr_rank_records({"full": 2e-4, "lora_r4": 2e-3, "lora_r16": 2e-3, "lora_r64": 2e-3})
    few = [r for r in records if r["sweep"]["params"]["optimizer.lr"] in (3e-4, 1e-3)]
    verdict, rule, parts = f13(tmp_path, few)
    assert {p.verdict for p in parts.values()} == {stats.NOT_MEASURED}
    assert verdict == stats.NOT_MEASURED and "ratio: not measured; rank: not measured" in rule
    some = [r for r in records if r in few or r["sweep"]["params"]["method"] in ("full", "lora_r4")]
    verdict, rule, parts = f13(tmp_path / "some", some)
    assert parts[RATIO.format(4)].verdict == stats.REPRODUCED and parts[RATIO.format(16)].verdict == stats.NOT_MEASURED
    assert verdict == stats.INCONCLUSIVE, rule


# --- F14 and F15 -----------------------------------------------------------------------------


def test_f14_all_layers_beat_attention_only_at_matched_parameters(tmp_path):
    counts = {"qkvo_r8": 921_600, "all_linear_r3": 915_840, "qkvo_r53": 6_105_600,
              "all_linear_r20": 6_105_600}

    def value(point, seed):
        better = point["method"].startswith("all_linear")
        best_lr = point["optimizer.lr"] == 1e-3
        return {"nll": 1.45 - 0.03 * better - 0.01 * best_lr + 0.003 * math.sin(5 * seed)}

    records = grid("targets_matched", {"method": list(counts), "optimizer.lr": [3e-4, 1e-3, 3e-3]},
                   value)
    for record in records:
        record["trainable_params"] = counts[record["sweep"]["params"]["method"]]
    frame = frame_of(tmp_path, ("targets_matched", records))
    verdict, _, parts = report.evaluate_finding("F14", frame)
    assert verdict == stats.REPRODUCED
    assert all(p.verdict == stats.REPRODUCED and p.effect.startswith("-0.03") for p in parts)
    assert any("lr=0.001" in pair for pair in parts[0].pairs)  # each arm at its own best lr
    notes = " ".join(n for n in report.verdicts.finding_notes("F14", frame) if isinstance(n, str))
    assert "qkvo_r8: 921,600" in notes and "all_linear_r3: 915,840" in notes
    assert "all_linear_r20: 6,105,600" in notes


def test_f15_judges_the_variants_at_high_rank_and_shows_low_rank_as_context(tmp_path):
    def value(point, seed):
        gain = {"plain": 0.0, "loraplus": -0.03, "rslora": -0.02}[point["variant"]]
        high = point["adapter.r"] == 128
        return {"nll": 1.45 + gain * high + 0.003 * math.sin(5 * seed)}

    records = grid("lora_variants", {"variant": ["plain", "loraplus", "rslora"], "adapter.r": [8, 128]},
                   value)
    frame = frame_of(tmp_path, ("lora_variants", records))
    verdict, rule, parts = report.evaluate_finding("F15", frame)
    assert verdict == stats.REPRODUCED and "LoRA+: reproduced; rsLoRA: reproduced" in rule
    parts = by_label(parts)
    high = parts["rsLoRA (alpha/sqrt(r)) vs plain LoRA at r=128: held-out NLL"]
    low = parts["rsLoRA (alpha/sqrt(r)) vs plain LoRA at r=8: held-out NLL"]
    assert high.group == "rsLoRA" and high.effect.startswith("-0.02")
    assert low.group is None and low.verdict == stats.INCONCLUSIVE  # no effect at r=8: context only


def test_the_new_claims_name_levels_their_sweeps_plan():
    claims.check_claims("lr_rank", {"method": METHODS, "optimizer.lr": LRS})
    with pytest.raises(ValueError, match="needs method=lora_r64"):
        claims.check_claims("lr_rank", {"method": METHODS[:3], "optimizer.lr": LRS})
    with pytest.raises(ValueError, match="needs axis 'optimizer.lr'"):
        claims.check_claims("lr_rank", {"method": METHODS})
    claims.check_claims("lora_variants", {"variant": ["plain", "loraplus", "rslora"], "adapter.r": [8, 128]})
    assert {f for f in claims.CLAIMS} >= {"F13", "F14", "F15"}
    assert [s for f in ("F13", "F14", "F15") for s in claims.sweeps_of(f)] == [
        "lr_rank", "targets_matched", "lora_variants"]

