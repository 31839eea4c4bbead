"""Scoring with lm-eval: the harness's offline task suite or any lm-eval task, in-process.

A trained model object (PEFT-wrapped or not) is scored directly through lm-eval's HFLM, so
no reload or merge is needed; scores come back as ``{task: {metric: {"value", "stderr"}}}``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .errors import EvalError

# Bump when a bundled task or its data generator changes, so cached base scores are recomputed.
TASKS_VERSION = 3
LOCAL_TASK_DIR = Path(__file__).resolve().parent / "lm_tasks"
LOCAL_TASKS = [
    "harness_arith_2da", "harness_arith_2ds", "harness_arith_4da", "harness_arith_4ds", "harness_arith_2dm",
    "harness_arith_gen_2da", "harness_arith_gen_2ds", "harness_heldout",
    # Forgetting probes the 135M base model does well above chance (2-/4-digit arithmetic is at the floor).
    "harness_agreement", "harness_capitals", "harness_add1d",
]
HELDOUT_TASK = "harness_heldout"
HELDOUT_FILE = "heldout.jsonl"
# The reference study's task set under today's lm-eval names (needs the HF hub for the data).
RASCHKA_TASKS = ["truthfulqa_mc1", "truthfulqa_mc2", "blimp_causative", "mmlu_global_facts", "arithmetic_2ds", "arithmetic_4ds"]


def task_manager(tasks: list[str], metadata: dict | None = None):
    """lm-eval's TaskManager: only the harness's own tasks when that is all that is asked for
    (skips seconds of indexing the built-in tasks), else both. ``metadata`` reaches the tasks'
    dataset builders (the held-out task's ``heldout_path``)."""
    from lm_eval.tasks import TaskManager

    only_local = all(t.startswith("harness_") for t in tasks)
    return TaskManager(include_defaults=not only_local, include_path=str(LOCAL_TASK_DIR), metadata=metadata)


def write_heldout(test_split: list[dict], tokenizer, path: Path) -> Path:
    """The run's test split as prompt/response text for the held-out likelihood task; n_tokens is
    the response length as the harness tokenized it (the per-token denominator)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for example in test_split:
            ids, labels = example["input_ids"], example["labels"]
            start = next(i for i, label in enumerate(labels) if label != -100)
            row = {"prompt": tokenizer.decode(ids[:start]), "response": tokenizer.decode(ids[start:]),
                   "n_tokens": sum(1 for label in labels if label != -100)}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def check_tasks(tasks: list[str]) -> None:
    """Fail at once for a hub task when the hub is not reachable."""
    from .models import hub_reachable

    remote = [t for t in tasks if not t.startswith("harness_")]
    if remote and not hub_reachable():
        raise EvalError(f"eval.tasks: {', '.join(remote)} need the HF hub for their data, which is not reachable; "
                        "use eval=local for the offline suite")


@functools.cache
def _process_requests_dir() -> Path:
    """This process's folder for lm-eval's built requests, removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="harness-lm-requests-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def requests_cache(tasks: list[str], num_fewshot: int | None, heldout_path: Path | None) -> Path:
    """Where lm-eval keeps the requests it built for these tasks (``cache_requests``), in this
    process. Why: building them (a Jinja template compiled per document) took about two thirds
    of scoring the probes (CPU profile, 2026-12-05), and a pack scores each of its trials, and
    its base, on the same requests. lm-eval keys its cache by task name alone, so the folder is
    keyed by what else decides the requests: the bundled tasks' version and the held-out file."""
    import lm_eval

    heldout = Path(heldout_path).read_bytes() if heldout_path and HELDOUT_TASK in tasks else b""
    key = json.dumps([lm_eval.__version__, TASKS_VERSION, sorted(tasks), num_fewshot, hashlib.sha256(heldout).hexdigest()])
    return _process_requests_dir() / hashlib.sha256(key.encode()).hexdigest()[:16]


def score(model, tokenizer, tasks: list[str], *, device: str, batch_size: int = 16, batch_tokens: int | None = None,
          num_fewshot: int | None = None, limit: int | None = None, heldout_path: Path | None = None,
          make_lm=None) -> dict:
    """Score ``model`` on lm-eval ``tasks``; returns ``{task: {metric: {"value", "stderr"}}}``.

    ``batch_tokens``: see ``eval.batch_tokens`` (:class:`harness.schema.EvalConfig`); null cuts
    ``batch_size`` requests a batch.
    ``heldout_path``: the run's test split (see :func:`write_heldout`), needed by harness_heldout.
    ``make_lm``: the lm-eval model wrapper, given HFLM's keyword arguments
    (:class:`harness.pack_scoring.BatchedLM`, HFLM answering a batch with one wait on the device,
    unless set; a pack's trials: :class:`harness.pack_scoring.PackLM`).
    """
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.caching import cache as lm_cache

    from .pack_scoring import BatchedLM

    check_tasks(tasks)
    if HELDOUT_TASK in tasks and not (heldout_path and Path(heldout_path).is_file()):
        raise EvalError(f"eval.tasks: {HELDOUT_TASK} scores a run's own test split and needs one (score a run dir)")
    if all(t.startswith("harness_") for t in tasks):
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    # lm-eval bootstraps a perplexity's stderr in a fork pool of one worker per CPU: forked from
    # a run holding CUDA and threads, it hung a sweep trial on a GPU for minutes (16 workers per
    # scoring run, 30 runs at once). Its in-process loop bootstraps the same statistic.
    os.environ["DISABLE_MULTIPROC"] = "1"
    was_training = model.training
    if next(model.parameters()).device.type != torch.device(device).type:
        # Lightning's teardown leaves a fitted model on the CPU, and HFLM scores a model object
        # wherever it lies (ignoring ``device``): without this, GPU runs were scored on the CPU,
        # slowly, and bitsandbytes int8 layers failed there. nn.Module.to, as Lightning uses it.
        torch.nn.Module.to(model, device)
    model.eval()
    try:
        # HFLM re-ties input and output embeddings, which fails once LoRA wraps a tied lm_head
        # (adapter.targets=all); the weights are tied as loaded already, so skip the re-tie.
        model.tie_weights = lambda *args, **kwargs: None
        try:
            # batch_tokens only when set: lm-eval's own HFLM (a make_lm for comparisons) has no such argument
            lm = (make_lm or BatchedLM)(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device,
                                        **({"batch_tokens": batch_tokens} if batch_tokens else {}))
        finally:
            del model.tie_weights
        # lm-eval prints progress notes to stdout; keep stdout for the caller's results.
        with contextlib.redirect_stdout(sys.stderr):
            manager = task_manager(tasks, {"heldout_path": str(heldout_path)} if heldout_path else None)
            # With a limit lm-eval builds every document to cache them: cache only full tasks.
            cached = limit is None
            if cached:
                lm_cache.PATH = str(requests_cache(tasks, num_fewshot, heldout_path))
            result = simple_evaluate(model=lm, tasks=tasks, task_manager=manager, num_fewshot=num_fewshot,
                                     limit=limit, log_samples=False, bootstrap_iters=1000, verbosity="ERROR",
                                     cache_requests=cached)
    finally:
        model.train(was_training)
    return parse_results(result["results"])


def parse_results(results: dict) -> dict:
    """lm-eval's ``"acc,none"`` / ``"acc_stderr,none"`` keys as ``{metric: {"value", "stderr"}}``."""
    out: dict = {}
    for task, metrics in results.items():
        entry: dict = {}
        for key, value in metrics.items():
            if "," not in key or "_stderr" in key:
                continue
            metric, _, filt = key.partition(",")
            stderr = metrics.get(f"{metric}_stderr,{filt}")  # "N/A" (-> None) for custom aggregations
            name = metric if filt == "none" else f"{metric},{filt}"
            entry[name] = {"value": _float(value), "stderr": _float(stderr)}
        out[task] = entry
    return out


def deltas(tuned: dict, base: dict) -> dict:
    """``tuned - base`` for every task and metric both have."""
    return {task: {m: v["value"] - base[task][m]["value"] for m, v in metrics.items()
                   if m in base.get(task, {}) and v["value"] is not None and base[task][m]["value"] is not None}
            for task, metrics in tuned.items() if task in base}


def _float(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
