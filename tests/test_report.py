"""The findings report: verdict rules on constructed records, the CLI on a fixture of several
sweeps, bad input, and the analysis notebooks executed against the same fixture.

Records are constructed, shaped like real ones (nested, lm-eval ``{value, stderr}`` pairs), and
go through ``harness.results`` like any others; no model runs here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import report
from harness.paths import REPO_ROOT
from harness.results import load_records

NOTEBOOKS = ("memory_vs_accuracy", "rank_alpha", "qlora_tradeoff", "seeds")


def make_record(sweep: str, trial: int, params: dict, *, status: str = "ok", seed: int = 42,
                finding: str | None = None, nll: float = 1.5, memory: float = 3.0,
                seconds: float = 60.0, arith_ppl: float | None = None, base_ppl: float = 2000.0,
                acc: float = 0.02, trainable: int = 460_800, error: str | None = None) -> dict:
    """One run record as the trial driver writes it (the fields the report reads)."""
    scored = status == "ok"
    record = {
        "status": status,
        "config": {"model": {"name": "tiny"}, "adapter": {"r": 8}},
        "run_dir": f"/tmp/somewhere/{sweep}/trials/{trial}",
        "device": {"name": "CPU"},
        "peak_memory_gib": memory,
        "train_seconds": seconds,
        "tokens_per_s": 1000.0 / seconds,
        "memory_estimate": {"total_gib": memory * 0.8},
        "trainable_params": trainable,
        "error": error,
        "sweep": {"name": sweep, "finding": finding, "trial": trial, "params": params,
                  "seed": seed, "scale": "smoke", "storage": "sqlite:////tmp/somewhere/optuna.db"},
    }
    if scored:
        arith = {"perplexity": {"value": arith_ppl or base_ppl, "stderr": 50.0},
                 "acc": {"value": acc, "stderr": 0.01}}
        record["eval"] = {"harness_heldout": {"token_nll": {"value": nll, "stderr": None}},
                          "harness_arith_2ds": arith,
                          "harness_arith_4ds": {"acc": {"value": 0.0, "stderr": 0.0}}}
        record["eval_base"] = {"harness_heldout": {"token_nll": {"value": 1.9, "stderr": None}},
                               "harness_arith_2ds": {"perplexity": {"value": base_ppl, "stderr": 50.0},
                                                     "acc": {"value": 0.03, "stderr": 0.01}},
                               "harness_arith_4ds": {"acc": {"value": 0.0, "stderr": 0.0}}}
        record["eval_delta"] = {"harness_heldout": {"token_nll": nll - 1.9}}
    return record


def write_sweep(root: Path, name: str, records: list[dict], space: dict | None = None) -> Path:
    """A sweep dir: trials/<n>[/seed_<s>]/record.json, and sweep.json when a space is given."""
    sweep_dir = root / name
    for record in records:
        run_dir = sweep_dir / "trials" / str(record["sweep"]["trial"])
        if name != "seeds" and record["sweep"]["seed"] != 42:
            run_dir = run_dir / f"seed_{record['sweep']['seed']}"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "record.json").write_text(json.dumps(record))
    if space is not None:
        planned = 1
        for levels in space.values():
            planned *= len(levels)
        (sweep_dir / "sweep.json").write_text(json.dumps(
            {"name": name, "description": f"{name} fixture", "space": space, "sampler": "grid",
             "planned": planned}))
    return sweep_dir


def frame_of(records: list[dict], tmp_path: Path):
    """The loader's DataFrame for constructed records."""
    write_sweep(tmp_path, records[0]["sweep"]["name"], records)
    return load_records(tmp_path)


def qlora_records(nf4_memory=2.0, nf4_seconds=90.0, nf4_nll=1.502, seeds=(42,)) -> list[dict]:
    """none / nf4 / fp4 (+ a failed int8) with the given nf4 and fp4 effects."""
    records, trial = [], 0
    for quant, memory, seconds, nll in (("none", 3.0, 60.0, 1.5), ("nf4", nf4_memory, nf4_seconds, nf4_nll),
                                        ("fp4", nf4_memory, nf4_seconds, nf4_nll)):
        for k, seed in enumerate(seeds):
            jitter = 0.001 * k  # seed-to-seed noise, small
            records.append(make_record("qlora", trial, {"quant": quant}, seed=seed, finding="F2",
                                       memory=memory, seconds=seconds + k, nll=nll + jitter))
        trial += 1
    records.append(make_record("qlora", trial, {"quant": "int8"}, status="failed", finding="F2",
                               memory=99.0, error="RuntimeError: boom in /home/someone/x.py"))
    return records


# --- (a) verdict rules ------------------------------------------------------------------------


@pytest.mark.parametrize("effect, threshold, expect, verdict", [
    (-0.5, 0.1, "lower", report.REPRODUCED),
    (0.5, 0.1, "lower", report.CONTRADICTED),
    (0.05, 0.1, "lower", report.INCONCLUSIVE),
    (0.5, 0.1, "higher", report.REPRODUCED),
    (0.05, 0.1, "same", report.REPRODUCED),
    (-0.5, 0.1, "same", report.CONTRADICTED),
    (0.5, 0.1, "differs", report.REPRODUCED),
    (0.05, 0.1, "differs", report.INCONCLUSIVE),
])
def test_decide(effect, threshold, expect, verdict):
    assert report.decide(effect, threshold, expect) == verdict


def test_threshold_takes_the_largest_noise_term():
    assert report.noise_threshold(2.0, report.MEMORY) == pytest.approx((0.04, "2% of the reference"))
    value, basis = report.noise_threshold(2.0, report.MEMORY, seed_std=0.1)
    assert (value, basis) == (pytest.approx(0.2), "2 x seed std")
    value, basis = report.noise_threshold(2.0, report.MEMORY, seed_std=0.1, scoring_se=0.5)
    assert (value, basis) == (pytest.approx(1.0), "2 x scoring stderr")


def test_combine_parts():
    assert report.combine([report.REPRODUCED] * 3)[0] == report.REPRODUCED
    assert report.combine([report.REPRODUCED, report.CONTRADICTED])[0] == report.CONTRADICTED
    assert report.combine([report.REPRODUCED, report.NOT_MEASURED])[0] == report.INCONCLUSIVE
    assert report.combine([])[0] == report.INCONCLUSIVE


def test_clear_qlora_effect_is_reproduced_and_failed_runs_are_excluded(tmp_path):
    verdict, rule, parts = report.evaluate_finding("F2", frame_of(qlora_records(), tmp_path))
    assert verdict == report.REPRODUCED, [p.rule for p in parts]
    memory = parts[0]
    assert memory.verdict == report.REPRODUCED
    assert memory.effect.startswith("-1 GiB (-33.3%)")
    assert "1 seed, no interval" in memory.interval
    assert "no seed repeats" in memory.threshold
    assert memory.rule.startswith("reproduced: quant=nf4 peak memory is lower than quant=none") or \
        memory.rule.startswith("reproduced: nf4 peak memory is lower than none")
    assert "every part reproduced" in rule


def test_null_and_contradicted_effects(tmp_path):
    # nf4 no lighter than none (null) and far worse on held-out NLL ('barely changes' contradicted).
    records = qlora_records(nf4_memory=3.0, nf4_seconds=90.0, nf4_nll=1.8)
    verdict, _, parts = report.evaluate_finding("F2", frame_of(records, tmp_path))
    by_label = {p.label: p.verdict for p in parts}
    assert by_label["nf4 vs none: peak memory"] == report.INCONCLUSIVE
    assert by_label["nf4 vs none: held-out NLL"] == report.CONTRADICTED
    assert verdict == report.CONTRADICTED


def test_seed_repeats_give_intervals_and_set_the_threshold(tmp_path):
    records = qlora_records(seeds=(1, 2, 3))
    _, _, parts = report.evaluate_finding("F2", frame_of(records, tmp_path))
    nll = parts[2]
    assert "3 seeds; 95% CI" in nll.reference
    assert "Welch, 3 vs 3 seeds" in nll.interval
    assert "of repeats in this sweep" in nll.threshold


def test_epochs_contradicted_when_a_second_epoch_helps(tmp_path):
    records = [make_record("epochs", t, {"trainer.epochs": e, "data": d}, finding="F5", nll=nll)
               for t, (e, d, nll) in enumerate([(1, "lima_1k", 1.5), (2, "lima_1k", 1.3),
                                                (1, "big", 1.4), (2, "big", 1.2)])]
    verdict, _, parts = report.evaluate_finding("F5", frame_of(records, tmp_path))
    assert verdict == report.CONTRADICTED
    assert len(parts[0].pairs) == 2 and parts[0].pairs[0].startswith("data=big: ")


def test_missing_levels_are_not_measured(tmp_path):
    records = [make_record("optimizer_scheduler", t, {"optimizer": o, "scheduler": "cosine",
                                                      "adapter.r": 8}, finding="F3,F4")
               for t, o in enumerate(["adamw", "sgd"])]
    frame = frame_of(records, tmp_path)
    verdict, _, parts = report.evaluate_finding("F3", frame)
    assert [p.verdict for p in parts] == [report.REPRODUCED, report.NOT_MEASURED]
    assert verdict == report.INCONCLUSIVE
    assert "adapter.r=256" in parts[1].rule
    assert report.evaluate_finding("F4", frame)[0] == report.INCONCLUSIVE


def test_seed_spread_verdict():
    assert report.seed_spread_verdict([1.500, 1.502, 1.498])[0] == report.REPRODUCED
    assert report.seed_spread_verdict([1.3, 1.5, 1.7])[0] == report.CONTRADICTED
    verdict, rule = report.seed_spread_verdict([1.5, 1.5])
    assert verdict == report.INCONCLUSIVE and "at least 3" in rule


def test_seeds_sweep_spread_judges_single_seed_sweeps(tmp_path):
    seeds = [make_record("seeds", s, {"seed": s}, seed=s, finding="F1", nll=nll)
             for s, nll in zip((1, 2, 3), (1.40, 1.50, 1.60), strict=True)]
    write_sweep(tmp_path, "seeds", seeds)
    write_sweep(tmp_path, "qlora", qlora_records(nf4_nll=1.53))
    frame = load_records(tmp_path)
    runs = report.sweep_runs(frame, "qlora")
    spreads = report.seed_spread_for(frame, runs)
    assert spreads[report.NLL] == pytest.approx(0.1)
    nll = report.evaluate_finding("F2", runs, spreads)[2][2]
    assert "std 0.1 of the F1 seeds sweep" in nll.threshold
    assert nll.verdict == report.REPRODUCED  # 0.03 is within 2 x 0.1
    assert report.evaluate_finding("F1", report.sweep_runs(frame, "seeds"))[0] == report.CONTRADICTED


def test_pareto_front():
    import pandas as pd

    points = pd.DataFrame({"m": [1, 2, 3, 2.5], "s": [3, 2, 1, 2.5]})
    assert list(report.pareto_front(points, "m", "s").index) == [0, 1, 2]


# --- (b) the CLI on several sweeps ------------------------------------------------------------


def build_fixture(root: Path) -> Path:
    """Constructed records of eight named sweeps, with a failed, an oom and an unrecorded point."""
    write_sweep(root, "qlora", qlora_records(), {"quant": ["none", "int8", "nf4", "fp4"]})
    ranks, ratios = (8, 16, 32), (0.5, 1, 2)
    rank_alpha = [make_record("rank_alpha", t, {"adapter.r": r, "adapter.alpha_over_r": a},
                              finding="F7", nll=1.5 - 0.02 * ranks.index(r) - 0.005 * ratios.index(a),
                              memory=3 + r / 100)
                  for t, (r, a) in enumerate((r, a) for r in ranks for a in ratios) if (r, a) != (32, 2)]
    write_sweep(root, "rank_alpha", rank_alpha, {"adapter.r": list(ranks), "adapter.alpha_over_r": list(ratios)})
    write_sweep(root, "seeds", [make_record("seeds", s - 1, {"seed": s}, seed=s, finding="F1",
                                            nll=1.5 + 0.001 * (s - 2)) for s in (1, 2, 3)])
    optimizer = [make_record("optimizer_scheduler", t, {"optimizer": o, "scheduler": s, "adapter.r": r},
                             finding="F3,F4", memory=3 + 0.003 * r * (o == "adamw"),
                             nll=1.5 - 0.05 * (o == "sgd" and s == "cosine"))
                 for t, (o, s, r) in enumerate((o, s, r) for o in ("adamw", "sgd")
                                               for s in ("constant", "cosine") for r in (8, 256))]
    write_sweep(root, "optimizer_scheduler", optimizer)
    write_sweep(root, "epochs", [make_record("epochs", t, {"trainer.epochs": e, "data": d}, finding="F5",
                                             nll=1.4 + 0.05 * e)
                                 for t, (e, d) in enumerate((e, d) for e in (1, 2, 3) for d in ("lima_1k", "sharegpt_4k"))])
    write_sweep(root, "full_vs_lora", [
        make_record("full_vs_lora", 0, {"method": "lora_qv"}, finding="F9", nll=1.5, memory=3, arith_ppl=2100),
        make_record("full_vs_lora", 1, {"method": "lora_all_r64"}, finding="F9", nll=1.45, memory=3.5, arith_ppl=2500),
        make_record("full_vs_lora", 2, {"method": "full"}, finding="F9", nll=1.3, memory=9, arith_ppl=4000)])
    write_sweep(root, "dora", [make_record("dora", t, {"adapter": k, "adapter.r": r}, finding="F11",
                                           nll=1.5 - 0.01 * (k == "dora") - 0.01 * (r == 32) * (k == "lora"))
                               for t, (k, r) in enumerate((k, r) for k in ("lora", "dora") for r in (4, 8, 32))])
    write_sweep(root, "targets", [
        make_record("targets", 0, {"adapter.targets": "qv"}, finding="F6", nll=1.5, memory=3.0),
        make_record("targets", 1, {"adapter.targets": "qkvo"}, finding="F6", nll=1.48, memory=3.1),
        make_record("targets", 2, {"adapter.targets": "all_linear"}, status="oom", finding="F6", memory=80.0,
                    error="CUDA out of memory"),
        make_record("targets", 3, {"adapter.targets": "all"}, finding="F6", nll=1.45, memory=3.4)])
    return root


@pytest.fixture(scope="module")
def fixture_sweeps(tmp_path_factory) -> Path:
    return build_fixture(tmp_path_factory.mktemp("sweeps"))


def run_report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.report", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


EXPECTED_PLOTS = {f"{s}_pareto.png" for s in ("qlora", "rank_alpha", "seeds", "optimizer_scheduler",
                                                "epochs", "full_vs_lora", "dora", "targets")} | {
    "qlora_memory_runtime.png", "rank_alpha_heatmap.png", "optimizer_scheduler_bars.png",
    "epochs_score_vs_epochs.png", "seeds_seed_spread.png", "full_vs_lora_learning_forgetting.png"}


def test_cli_writes_the_report_with_every_plot(fixture_sweeps, tmp_path):
    out = tmp_path / "out"
    dirs = sorted(str(p) for p in fixture_sweeps.iterdir())
    result = run_report(*dirs, "--out", str(out), "--note", "fixture from /tmp/private/place")
    assert result.returncode == 0, result.stderr
    assert str(out / "report.md") in result.stdout
    text = (out / "report.md").read_text()
    pngs = {p.name for p in out.glob("*.png")}
    assert EXPECTED_PLOTS <= pngs
    for png in pngs:
        assert f"]({png})" in text and f'src="{png}"' in (out / "report.html").read_text()
    for finding in ("F1", "F2", "F3", "F4", "F5", "F6", "F7", "F9", "F10", "F11"):
        assert f"### {finding} " in text
    assert "| 3 | 42 | quant=int8 | failed | RuntimeError: boom in .../x.py |" in text
    assert "all_linear | oom | CUDA out of memory" in text
    assert "Planned grid points with no record (1" in text and "r=32, alpha_over_r=2" in text
    assert "1 seed, no interval" in text and "3 seeds; 95% CI" in text
    # No machine paths or storage URLs anywhere in the report.
    for leaked in (str(fixture_sweeps), str(out), "/tmp/", "sqlite:"):
        assert leaked not in text and leaked not in (out / "report.html").read_text()


def test_cli_default_out_is_inside_the_first_sweep_dir(tmp_path):
    sweep = write_sweep(tmp_path, "qlora", qlora_records())
    result = run_report(str(sweep))
    assert result.returncode == 0, result.stderr
    assert (sweep / "report" / "report.md").is_file()
    assert (sweep / "report" / "qlora_memory_runtime.png").is_file()


# --- (c) bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, make):
    target = tmp_path / "sweep"
    if make == "empty":
        target.mkdir()
    result = run_report(str(target), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    assert not (tmp_path / "out").exists()


# --- (d) the notebooks ------------------------------------------------------------------------


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_against_the_fixture(fixture_sweeps, name, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    path = REPO_ROOT / "analysis" / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:  # committed without outputs
        assert cell.get("outputs", []) == [] and cell.get("execution_count") is None
    monkeypatch.setenv("HARNESS_SWEEP_DIR", str(fixture_sweeps))
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    start = time.monotonic()
    nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    assert time.monotonic() - start < 30
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the notebook drew no plot"
    assert os.environ["HARNESS_SWEEP_DIR"] == str(fixture_sweeps)
