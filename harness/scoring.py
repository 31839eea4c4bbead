"""Scoring a run: the base model's scores (cached), the tuned model's, and for quantized
adapters the study's protocol (the adapter merged into the 16-bit base).

The reference study scored merged 16-bit weights. A QLoRA adapter is therefore scored twice:
in-process on the 4-bit base it trained on (``eval_quantized``, against ``eval_base_quantized``)
and merged into the unquantized base, as ``python -m harness.export`` would write it (``eval``,
against the 16-bit ``eval_base``). ``eval_protocol`` says which one ``eval`` is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

from . import evaluate, models
from .paths import atomic_write, cache_dir
from .schema import QuantConfig, RunConfig

log = logging.getLogger(__name__)

MERGED_16BIT, IN_PROCESS = "merged_16bit", "in_process"


def score_run(model, tokenizer, run: RunConfig, device: str, run_dir: Path, make_lm=None) -> dict:
    """lm-eval scores of the model as it is now, for the run's eval settings (``make_lm``: see
    :func:`harness.evaluate.score`)."""
    e = run.eval
    heldout = run_dir / evaluate.HELDOUT_FILE
    return evaluate.score(model, tokenizer, e.tasks, device=device, batch_size=e.batch_size,
                          batch_tokens=e.batch_tokens, num_fewshot=e.num_fewshot, limit=e.limit, heldout_path=heldout if heldout.is_file() else None,
                          make_lm=make_lm)


def base_cache_key(run: RunConfig, precision: str, device: str) -> tuple[str, dict]:
    """The base scores' cache key and the fields it hashes: (model, quant, precision, tasks,
    settings, and the data where the held-out task scores the run's own test split)."""
    # eval.quantized_context says which models are scored, not how: the base's scores are the same.
    eval_key = {k: v for k, v in dataclasses.asdict(run.eval).items() if k != "quantized_context"}
    key_fields = {"model": dataclasses.asdict(run.model), "quant": dataclasses.asdict(run.quant),
                  "eval": eval_key, "precision": precision,
                  "device": device, "seed": run.seed if run.model.init == "random" else None,
                  "tasks_version": evaluate.TASKS_VERSION,
                  "data": dataclasses.asdict(run.data) if evaluate.HELDOUT_TASK in run.eval.tasks else None}
    return hashlib.sha256(json.dumps(key_fields, sort_keys=True, default=str).encode()).hexdigest()[:20], key_fields


def base_scores(model, tokenizer, run: RunConfig, precision: str, device: str, run_dir: Path) -> dict:
    """Scores of the untrained ``model``, cached per :func:`base_cache_key`.

    One process scores a given base at a time (a lock file beside the cache entry, which the
    system lets go if its holder dies); the others wait and read its scores. Why: a sweep's
    first packs start together, and each scored the same base, about 30 s apiece on a shared
    H100, before the first had written it (2026-12-06)."""
    from filelock import FileLock

    key, key_fields = base_cache_key(run, precision, device)
    path = cache_dir() / "eval_base" / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_suffix(".lock")):
        if path.is_file():
            log.info("base scores from cache %s", path)
            return json.loads(path.read_text())["scores"]
        scores = score_run(model, tokenizer, run, device, run_dir)
        atomic_write(path, lambda f: json.dump({"key": key_fields, "scores": scores}, f, indent=2, default=str))
    return scores


def scores_merged(run: RunConfig) -> bool:
    """Whether ``eval`` is the adapter merged into the 16-bit base: quantized adapters with
    pretrained weights (a random base cannot be rebuilt unquantized with the same weights) that
    were saved (``trainer.save_weights``); otherwise ``eval_protocol`` says ``in_process``."""
    return (run.quant.mode != "none" and run.adapter.kind != "full" and run.model.init == "pretrained"
            and run.trainer.save_weights)


def scores_in_process(run: RunConfig) -> bool:
    """Whether the model is scored in-process, where it trained (and its base before training):
    always, but for a merged-scored quantized adapter with ``eval.quantized_context=false``."""
    return not scores_merged(run) or run.eval.quantized_context


def score_merged_16bit(adapter_dir: Path, tokenizer, run: RunConfig, precision: str, device: str, run_dir: Path) -> dict:
    """The study's protocol for a quantized adapter: ``eval_base`` of the unquantized base and
    ``eval`` of the adapter merged into it (the weights ``harness.export`` writes)."""
    import torch
    from peft import PeftModel

    unquantized = dataclasses.replace(run, quant=QuantConfig(mode="none"))
    base = models.build_model(run.model, unquantized.quant, precision, device)
    out = {"eval_base": base_scores(base, tokenizer, unquantized, precision, device, run_dir)}
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    out["eval"] = score_run(merged, tokenizer, unquantized, device, run_dir)
    del base, merged
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def score_trained(model, tokenizer, run: RunConfig, precision: str, device: str, run_dir: Path, eval_base: dict | None,
                  adapter_path: str | None, make_lm=None) -> dict:
    """The trained model's scores and their deltas from the base (``eval_base``); a quantized
    adapter (saved in ``adapter_path``) is also scored merged into the 16-bit base, which then
    becomes ``eval`` (see the module's docstring). ``make_lm`` scores the model in-process where
    it trained (:func:`harness.evaluate.score`)."""
    if run.fault.kind == "oom_scoring":
        import torch

        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by fault.kind=oom_scoring as scoring started)")
    if not scores_merged(run):
        scores = score_run(model, tokenizer, run, device, run_dir, make_lm)
        return {"eval": scores, "eval_protocol": IN_PROCESS, "eval_delta": evaluate.deltas(scores, eval_base)}
    out = {"eval_protocol": MERGED_16BIT}
    if scores_in_process(run):
        scores = score_run(model, tokenizer, run, device, run_dir, make_lm)
        out.update(eval_quantized=scores, eval_base_quantized=eval_base,
                   eval_quantized_delta=evaluate.deltas(scores, eval_base))
    out.update(score_merged_16bit(Path(adapter_path), tokenizer, run, precision, device, run_dir))
    out["eval_delta"] = evaluate.deltas(out["eval"], out["eval_base"])
    return out
