"""The speed/memory bench on CPU: both paths run on the same batches and the table is complete.
(Speed goals are measured on a GPU and recorded in docs/benchmarks.md, not asserted here.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.paths import REPO_ROOT


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.bench", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600)


def test_bench_runs_both_paths_on_the_same_batches(tmp_path):
    out = tmp_path / "bench.json"
    result = bench("--configs", "tiny_lora_all", "--seq", "64", "--steps", "3", "--warmup", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {r["path"]: r for r in report["rows"]}
    assert set(rows) == {"reference", "harness"} and all(r["status"] == "ok" for r in rows.values())
    for row in rows.values():
        assert row["tokens_per_s"] > 0 and row["step_seconds"] > 0 and len(row["losses"]) == 4
        assert row["trainable_params"] == rows["reference"]["trainable_params"]  # the same adapter
    # Same model, same first batch: the same loss, up to bf16 rounding.
    assert rows["harness"]["losses"][0] == pytest.approx(rows["reference"]["losses"][0], rel=1e-3)
    (ratio,) = report["ratios"]
    assert ratio["tokens_per_s"] == pytest.approx(rows["harness"]["tokens_per_s"] / rows["reference"]["tokens_per_s"], rel=1e-2)
    assert "| tiny_lora_all | harness |" in result.stdout


def test_bench_refuses_an_unknown_configuration(tmp_path):
    result = bench("--configs", "13b_magic", "--out", str(tmp_path / "x.json"))
    assert result.returncode == 2 and "--configs: unknown 13b_magic" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "x.json").exists()


def test_every_bench_configuration_composes_and_the_estimate_set_covers_issue_18(tmp_path):
    """A GPU call of ``--configs estimate`` must not die on a typo; the set holds the shapes the
    memory-estimate goal names: double quant, int8, lm_head adapted, full fine-tuning, DoRA,
    mixed precision, compile on and off, a long sequence; 12 or more."""
    from harness.bench import (
        CONFIGS,
        ESTIMATE_CONFIGS,
        bench_overrides,
        bench_tokenizer,
        shape_seq,
        synthetic_data,
    )
    from harness.compose import compose

    tokenizer, data = bench_tokenizer(tmp_path / "tok"), synthetic_data(tmp_path / "d.jsonl", 2)
    runs = {name: compose(bench_overrides(name, 512, 2, data, tokenizer))[0] for name in CONFIGS}
    shapes = [runs[name] for name in ESTIMATE_CONFIGS]
    assert len(set(ESTIMATE_CONFIGS)) >= 12
    assert any(r.quant.double_quant for r in shapes) and any(r.quant.mode == "int8" for r in shapes)
    assert any("lm_head" in r.adapter.target_modules for r in shapes if r.adapter.kind != "full")
    assert {r.adapter.kind for r in shapes} == {"lora", "dora", "full"}
    assert {r.trainer.compile for r in shapes} == {True, False}
    assert any(r.trainer.precision == "bf16-mixed" for r in shapes)
    assert max(r.data.max_seq_len for r in shapes) == 2048
    assert runs["135m_lora_all"].data.max_seq_len == 512
    # a row reports the length its shape ran at (the 2,048-token shape's said 512, 2026-12-07)
    assert all(shape_seq(name, 512) == run.data.max_seq_len for name, run in runs.items())


def test_sweep_throughput_times_plain_trials_against_a_harness_sweep(tmp_path):
    out = tmp_path / "sweep.json"
    result = bench("--configs", "tiny_lora_all", "--seq", "64", "--steps", "3", "--sweep-trials", "2",
                   "--trials-per-gpu", "2", "--reference-trials", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads(out.read_text())["sweeps"]
    assert row["trials_ok"] == row["trials"] == 2 and row["sweep_exit_code"] == 0
    assert len(row["reference_trial_seconds"]) == 1 and len(row["harness_tokens_per_s"]) == 2
    assert row["reference_trials_per_hour"] == pytest.approx(3600 / row["reference_trial_seconds"][0], rel=1e-2)
    assert row["harness_trials_per_hour"] == pytest.approx(2 * 3600 / row["sweep_seconds"], rel=1e-2)
    assert row["trials_per_hour_harness_over_reference"] == pytest.approx(
        row["harness_trials_per_hour"] / row["reference_trials_per_hour"], rel=2e-2)


def test_plain_trials_are_timed_one_process_each(tmp_path):
    # Issue 23's reference: plain-loop trials timed alone, start-up included, for
    # python -m harness.report.throughput --plain-seconds.
    out = tmp_path / "plain.json"
    result = bench("--configs", "tiny_lora_all", "--seq", "64", "--steps", "3", "--plain-trials", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    trials = json.loads(out.read_text())["plain_trials"]["tiny_lora_all"]
    assert len(trials) == 2 and trials[0]["losses"] == trials[1]["losses"]  # the same trial twice
    assert all(t["wall_seconds"] > t["step_seconds"] * 3 and t["tokens_per_s"] > 0 for t in trials)
    walls = " ".join(f"{t['wall_seconds']:.1f}" for t in trials)
    assert f"tiny_lora_all: plain-loop trial wall seconds {walls}" in result.stdout
    both = bench("--configs", "tiny_lora_all", "--plain-trials", "1", "--sweep-trials", "2", "--out", str(out))
    assert both.returncode == 2 and "give one" in both.stderr.strip().splitlines()[-1]
