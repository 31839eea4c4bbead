"""Data for the harness's offline lm-eval tasks, generated deterministically (no download).

The arithmetic tasks use the exact prompt and target format of lm-eval's own ``arithmetic_*``
tasks ("Question: What is 98 minus 45?\\nAnswer:" -> " 53"), with operands drawn uniformly
from [0, 10^digits) as in the GPT-3 arithmetic set, but they are the harness's own problems:
their names start with ``harness_`` so nobody mistakes them for the hub versions.
"""

from __future__ import annotations

import random

OPERATIONS = {"a": ("plus", lambda x, y: x + y), "s": ("minus", lambda x, y: x - y), "m": ("times", lambda x, y: x * y)}
N_PROBLEMS = 200
SEED = 1234


def arithmetic_problems(digits: int, op: str, n: int = N_PROBLEMS, seed: int = SEED) -> list[dict]:
    """``n`` problems ``{"context", "completion", "answer"}`` for ``digits``-digit operands."""
    word, fn = OPERATIONS[op]
    rng = random.Random(f"{digits}d{op}-{seed}")
    problems = []
    for _ in range(n):
        x, y = rng.randrange(10**digits), rng.randrange(10**digits)
        answer = str(fn(x, y))
        problems.append({"context": f"Question: What is {x} {word} {y}?\nAnswer:", "completion": f" {answer}", "answer": answer})
    return problems


def _dataset(digits: int, op: str, **kwargs):
    import datasets

    n = int(kwargs.get("n_problems", N_PROBLEMS))
    return datasets.DatasetDict({"validation": datasets.Dataset.from_list(arithmetic_problems(digits, op, n))})


def arith_2da(**kwargs):
    return _dataset(2, "a", **kwargs)


def arith_2ds(**kwargs):
    return _dataset(2, "s", **kwargs)


def arith_4da(**kwargs):
    return _dataset(4, "a", **kwargs)


def arith_4ds(**kwargs):
    return _dataset(4, "s", **kwargs)


def arith_2dm(**kwargs):
    return _dataset(2, "m", **kwargs)


# ---------------------------------------------------------------- held-out response likelihood


def heldout(**kwargs):
    """The run's held-out test split ({prompt, response, n_tokens} JSONL written by the harness);
    its path comes through lm-eval's task metadata as ``heldout_path``."""
    import json

    import datasets

    path = kwargs.get("heldout_path")
    if not path:
        raise ValueError("harness_heldout needs metadata heldout_path (a JSONL of prompt/response/n_tokens)")
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def heldout_results(doc, results):
    """Negative log-likelihood of the reference response and its token count (as the harness
    tokenized it), so the aggregate is a per-token loss."""
    loglikelihood, _ = results[0]
    item = (-loglikelihood, doc["n_tokens"])
    return {"token_nll": item, "token_perplexity": item}


def mean_token_nll(items):
    return sum(nll for nll, _ in items) / max(1, sum(n for _, n in items))


def token_perplexity(items):
    import math

    return math.exp(mean_token_nll(items))
