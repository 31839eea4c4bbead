"""The offline lm-eval suite: deterministic, correct problems; every task runs on the tiny model."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest

from harness.evaluate import LOCAL_TASKS, EvalError, check_tasks, deltas, score
from harness.lm_tasks.utils import (
    CAPITALS,
    add1d_problems,
    agreement_pairs,
    arithmetic_problems,
    capital_questions,
)
from tests.helpers import compose_run


@pytest.mark.parametrize("digits,op", [(2, "a"), (2, "s"), (4, "a"), (4, "s"), (2, "m")])
def test_arithmetic_is_deterministic_and_right(digits, op):
    first, again = arithmetic_problems(digits, op), arithmetic_problems(digits, op)
    assert first == again and len(first) == 200
    assert arithmetic_problems(digits, op, seed=7) != first
    for p in first:
        x, word, y = re.fullmatch(r"Question: What is (\d+) (plus|minus|times) (\d+)\?\nAnswer:", p["context"]).groups()
        x, y = int(x), int(y)
        assert x < 10**digits and y < 10**digits
        assert int(p["answer"]) == {"plus": x + y, "minus": x - y, "times": x * y}[word]
        assert p["completion"] == " " + p["answer"]  # lm-eval's arithmetic target format


# The forgetting probes' fixed metric names (the findings report reads them).
PROBE_METRICS = {"harness_agreement": {"acc", "margin"}, "harness_capitals": {"acc", "margin"},
                 "harness_add1d": {"acc", "gold_logprob"}}


def test_agreement_pairs_are_deterministic_distinct_minimal_pairs():
    pairs = agreement_pairs()
    assert pairs == agreement_pairs() and pairs != agreement_pairs(seed=7)
    assert len(pairs) == 660 and len({p["sentence_good"] for p in pairs}) == len({p["sentence_bad"] for p in pairs}) == 660
    per_template = Counter(p["template"] for p in pairs)
    assert len(per_template) == 5 and set(per_template.values()) == {132}
    singular = {"is", "was", "smiles", "laughs", "sleeps", "waits", "works", "swims"}
    plural = {"are", "were", "smile", "laugh", "sleep", "wait", "work", "swim"}
    n_singular = 0
    for p in pairs:
        assert p["sentence_good"] == f"{p['prefix']} {p['good']}" and p["sentence_bad"] == f"{p['prefix']} {p['bad']}"
        good, bad = p["good"].rstrip(".").split(" ", 1)[0], p["bad"].rstrip(".").split(" ", 1)[0]
        assert p["good"].split(" ")[1:] == p["bad"].split(" ")[1:]  # only the verb differs
        assert (good in singular and bad in plural) or (good in plural and bad in singular), p
        n_singular += good in singular
    assert abs(n_singular - 330) < 40  # both subject numbers, about half each


def test_capital_questions_are_real_four_way_and_deterministic():
    questions = capital_questions()
    assert questions == capital_questions() and len(questions) == len(CAPITALS) == 200
    truth = dict(CAPITALS)
    assert len(truth) == 200 and len(set(truth.values())) == 200  # distinct countries and capitals
    for q in questions:
        assert len(set(q["choices"])) == 4 and q["choices"][q["gold"]] == truth[q["country"]]
        assert set(q["choices"]) <= set(truth.values())  # the distractors are other capitals
    assert Counter(q["gold"] for q in questions).keys() == {0, 1, 2, 3}
    assert {q["country"]: q["choices"][q["gold"]] for q in questions}["France"] == "Paris"


def test_add1d_problems_are_distinct_right_and_one_digit():
    problems = add1d_problems()
    assert problems == add1d_problems() and len(problems) == 100 + 55 + 900
    assert len({p["context"] for p in problems}) == len(problems)
    for p in problems:
        x, word, y = re.fullmatch(r"Question: What is (\d+) (plus|minus) (\d+)\?\nAnswer:", p["context"]).groups()
        x, y = int(x), int(y)
        assert y <= 9 and x <= 99 and (word == "plus" or x <= 9)
        assert int(p["answer"]) == (x + y if word == "plus" else x - y) >= 0
        assert p["completion"] == " " + p["answer"]


@pytest.fixture(scope="module")
def tiny_model():
    from harness.models import build_model, load_tokenizer

    run = compose_run(["model=tiny"])
    return build_model(run.model, run.quant, "32-true", "cpu"), load_tokenizer(run.model)


def test_every_local_task_scores_offline_on_the_tiny_model(tiny_model, tmp_path):
    from harness.evaluate import HELDOUT_TASK, write_heldout

    model, tokenizer = tiny_model
    prompt = tokenizer("Question: two?\nAnswer:")["input_ids"]
    answer = tokenizer(" two")["input_ids"]
    heldout = write_heldout([{"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer}] * 3,
                            tokenizer, tmp_path / "heldout.jsonl")
    scores = score(model, tokenizer, LOCAL_TASKS, device="cpu", limit=8, heldout_path=heldout)
    assert set(scores) == set(LOCAL_TASKS)
    for task, metrics in scores.items():
        if task == HELDOUT_TASK:
            # A random model over a 49,152-token vocabulary: per-token loss near ln(49152) = 10.8.
            assert 9.5 < metrics["token_nll"]["value"] < 12
            assert metrics["token_perplexity"]["value"] == pytest.approx(math.exp(metrics["token_nll"]["value"]))
            continue
        metric = "exact_match,strip" if "_gen_" in task else "acc"
        assert 0.0 <= metrics[metric]["value"] <= 1.0, task
        assert metrics[metric]["stderr"] is not None
        if task in PROBE_METRICS:  # the fixed names, each with a stderr
            assert set(metrics) == PROBE_METRICS[task], task
            assert all(m["value"] is not None and m["stderr"] is not None for m in metrics.values()), task


def test_scoring_forks_no_process_and_still_bootstraps_the_perplexity_stderr(tiny_model, monkeypatch):
    # lm-eval's fork pool (one worker per CPU) hung a GPU trial; scoring must stay in-process.
    import multiprocessing

    def no_pool(*args, **kwargs):
        raise AssertionError("scoring started a multiprocessing pool")

    monkeypatch.setattr(multiprocessing, "Pool", no_pool)
    monkeypatch.delenv("DISABLE_MULTIPROC", raising=False)
    model, tokenizer = tiny_model
    ppl = score(model, tokenizer, ["harness_arith_2ds"], device="cpu", limit=8)["harness_arith_2ds"]["perplexity"]
    assert ppl["value"] > 1 and ppl["stderr"] is not None and ppl["stderr"] > 0


def test_a_process_builds_a_full_task_s_requests_once_per_held_out_split(tiny_model, tmp_path, monkeypatch):
    # Building lm-eval's requests was most of scoring's time, and a pack scores its base and each
    # trial on the same ones: a process builds them once. lm-eval keys its cache by task name, so
    # a different held-out split (same task name) must be built again, not read from the cache.
    from lm_eval.api.task import ConfigurableTask

    from harness.evaluate import write_heldout

    model, tokenizer = tiny_model
    built = []
    construct = ConfigurableTask.construct_requests
    monkeypatch.setattr(ConfigurableTask, "construct_requests",
                        lambda self, *a, **k: built.append(self.config.task) or construct(self, *a, **k))

    def heldout(name: str, answer: str):
        prompt, ids = tokenizer("Question: how many?\nAnswer:")["input_ids"], tokenizer(answer)["input_ids"]
        return write_heldout([{"input_ids": prompt + ids, "labels": [-100] * len(prompt) + ids}] * 3,
                             tokenizer, tmp_path / name / "heldout.jsonl")

    tasks = ["harness_heldout", "harness_add1d"]
    first = score(model, tokenizer, tasks, device="cpu", heldout_path=heldout("a", " two"))
    assert set(built) == set(tasks)
    n = len(built)
    assert score(model, tokenizer, tasks, device="cpu", heldout_path=tmp_path / "a" / "heldout.jsonl") == first
    assert len(built) == n  # read from the cache
    other = score(model, tokenizer, tasks, device="cpu", heldout_path=heldout("b", " seven red apples"))
    assert built[n:].count("harness_heldout") == 3  # a new split: built again
    assert other["harness_heldout"] != first["harness_heldout"] and other["harness_add1d"] == first["harness_add1d"]
    # Uncached (a limit builds only what it scores, and lm-eval caches no partial task): the same.
    assert score(model, tokenizer, tasks, device="cpu", heldout_path=tmp_path / "b" / "heldout.jsonl", limit=10**6) == other


def test_heldout_needs_a_test_split(tiny_model):
    model, tokenizer = tiny_model
    with pytest.raises(EvalError, match="harness_heldout"):
        score(model, tokenizer, ["harness_heldout"], device="cpu")


def test_hub_task_without_network_fails_at_once():
    with pytest.raises(EvalError, match="truthfulqa_mc2"):
        check_tasks(["harness_arith_2da", "truthfulqa_mc2"])


def test_deltas():
    base = {"t": {"acc": {"value": 0.5, "stderr": 0.1}}}
    tuned = {"t": {"acc": {"value": 0.75, "stderr": 0.1}}, "u": {"acc": {"value": 1.0, "stderr": 0}}}
    assert deltas(tuned, base) == {"t": {"acc": 0.25}}


def test_run_records_scores_base_and_deltas_and_training_ignores_the_cache(tmp_path, monkeypatch):
    """A run with eval scores before/after; the cached second run trains identically."""
    import json

    from tests.helpers import tiny, train_in_process

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"conversations": [{"from": "human", "value": f"Add {a} and {a}."},
                                                         {"from": "gpt", "value": f"{2 * a}"}]}) + "\n" for a in range(60)))
    overrides = tiny(chat, "optimizer.lr=0.01") + ["eval=local", "eval.limit=10"]
    first = train_in_process(overrides, tmp_path / "a")
    second = train_in_process(overrides, tmp_path / "b")
    for record in (first, second):
        assert record["status"] == "ok", record.get("error")
        assert set(record["eval"]) == set(LOCAL_TASKS) and set(record["eval_base"]) == set(LOCAL_TASKS)
        for task, metrics in record["eval_delta"].items():
            for metric, delta in metrics.items():
                assert delta == pytest.approx(record["eval"][task][metric]["value"] - record["eval_base"][task][metric]["value"])
    assert len(list((tmp_path / "cache" / "eval_base").glob("*.json"))) == 1
    # The learning probe: the tuned model predicts held-out responses better than the base.
    assert first["eval_delta"]["harness_heldout"]["token_nll"] < 0
    assert first["train_losses"] == second["train_losses"]
    assert first["eval"] == second["eval"]


def test_in_process_score_equals_lm_eval_cli_on_the_merged_export(tmp_path, capsys):
    """The record's in-process score of a tuned adapter == lm-eval's own CLI on the export."""
    import json
    import subprocess
    import sys

    from harness.evaluate import LOCAL_TASK_DIR
    from tests.helpers import tiny, train_in_process

    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"conversations": [{"from": "human", "value": f"What is {a} plus 1?"},
                                                         {"from": "gpt", "value": f"{a + 1}"}]}) + "\n" for a in range(60)))
    tasks = ["harness_arith_2da", "harness_arith_4ds"]
    run_dir = tmp_path / "run"
    record = train_in_process(tiny(chat, "optimizer.lr=0.02", "adapter.targets=all_linear") +
                              ["eval=custom", f"eval.tasks=[{','.join(tasks)}]", "eval.limit=20"], run_dir)
    assert record["status"] == "ok", record.get("error")
    from harness.export import main as export_main  # its command line: test_train's export test

    capsys.readouterr()  # the training's output
    export_main([str(run_dir)])
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(run_dir / "merged")
    out = tmp_path / "lm_eval_out"
    cli = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={run_dir / 'merged'}",
         "--tasks", ",".join(tasks), "--include_path", str(LOCAL_TASK_DIR), "--limit", "20", "--device", "cpu",
         "--batch_size", "16", "--output_path", str(out)],
        capture_output=True, text=True, env={**__import__("os").environ, "HF_DATASETS_OFFLINE": "1"})
    assert cli.returncode == 0, cli.stderr[-3000:]
    results = json.loads(next(out.rglob("results*.json")).read_text())["results"]
    for task in tasks:
        ours = record["eval"][task]
        assert results[task]["acc,none"] == pytest.approx(ours["acc"]["value"], abs=1e-4)
        assert results[task]["perplexity,none"] == pytest.approx(ours["perplexity"]["value"], rel=1e-4)
    assert record["eval_delta"][tasks[0]]["perplexity"] != 0  # training moved the answers' likelihood

    # python -m harness.eval scores a run dir, its adapter dir and the merged folder alike: the
    # command line once, its main in this process for the other two (a process each is seconds of imports).
    from harness.eval import main as eval_main

    for path in (run_dir, run_dir / "adapter", run_dir / "merged"):
        args = [str(path), "--tasks", tasks[0], "--limit", "20", "--device", "cpu"]
        if path == run_dir:
            scored = subprocess.run([sys.executable, "-m", "harness.eval", *args], capture_output=True, text=True)
            assert scored.returncode == 0, scored.stderr[-2000:]
            printed = scored.stdout
        else:
            capsys.readouterr()
            eval_main(args)
            printed = capsys.readouterr().out
            printed = printed[printed.index("{"):]  # the JSON the CLI prints last, after lm-eval's progress
        got = json.loads(printed)[tasks[0]]["perplexity"]["value"]
        assert got == pytest.approx(record["eval"][tasks[0]]["perplexity"]["value"], rel=1e-4), path


# The embedded base model (SmolLM2-135M-Instruct, fp32, CPU) on the forgetting probes, through
# harness.evaluate.score on all items: (items, chance, {metric: (value, stderr)}). Chance for
# add1d's greedy answer is taken as 0 (the base is at 0.01-0.02 on 2-digit arithmetic). Scoring
# all 3,200 requests takes about 5-14 minutes on 2 CPU cores, too long for every CI run, so the
# test scores the first PROBE_SUBSET items of each task (the items are shuffled by a fixed seed,
# so the subset is a fair sample) and checks them against these full-task figures.
BASE_PROBE_SCORES = {
    "harness_agreement": (660, 0.5, {"acc": (0.8712, 0.0130), "margin": (1.931, 0.066)}),
    "harness_capitals": (200, 0.25, {"acc": (0.845, 0.0257), "margin": (5.913, 0.413)}),
    "harness_add1d": (1055, 0.0, {"acc": (0.1156, 0.0099), "gold_logprob": (-5.127, 0.057)}),
}
PROBE_SUBSET = 100


@pytest.mark.slow
def test_base_model_does_the_forgetting_probes_well_above_chance():
    """A minute or more on a CPU: about 700 short loglikelihood requests."""
    import math

    from harness.models import build_model, load_tokenizer

    run = compose_run([])
    model, tokenizer = build_model(run.model, run.quant, "32-true", "cpu"), load_tokenizer(run.model)
    scores = score(model, tokenizer, list(BASE_PROBE_SCORES), device="cpu", limit=PROBE_SUBSET)
    assert [len(agreement_pairs()), len(capital_questions()), len(add1d_problems())] == \
        [items for items, _, _ in BASE_PROBE_SCORES.values()]
    for task, (_, chance, expected) in BASE_PROBE_SCORES.items():
        acc = scores[task]["acc"]
        assert acc["value"] > chance + 3 * acc["stderr"], task  # well above chance on the subset
        for metric, (value, stderr) in expected.items():
            got = scores[task][metric]
            # The subset agrees with the whole task within three standard errors of the difference.
            assert abs(got["value"] - value) < 3 * math.hypot(got["stderr"], stderr), (task, metric, got, value)
    assert scores["harness_agreement"]["margin"]["value"] > 0 and scores["harness_capitals"]["margin"]["value"] > 0


def test_callers_scoring_one_base_at_once_score_it_once_and_all_get_its_scores(tiny_model, tmp_path, monkeypatch):
    """Two callers of ``base_scores`` for the same base at the same time (as a sweep's first
    packs start together): one scores it, the other waits on the cache entry's lock and reads
    the scores it wrote. Two threads here: the lock is taken per open file, so they contend for
    it as two processes do."""
    import threading
    import time

    from harness import scoring

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    model, tokenizer = tiny_model
    run = compose_run(["model=tiny", "eval=local", "eval.tasks=[harness_capitals]", "eval.limit=4"])
    scored, real = [], scoring.score_run

    def score_run(*args, **kwargs):
        scored.append(threading.current_thread().name)
        time.sleep(1)  # holds the lock while the other caller arrives
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "score_run", score_run)
    together, got = threading.Barrier(2), {}

    def call(name):
        together.wait()
        got[name] = scoring.base_scores(model, tokenizer, run, "32-true", "cpu", tmp_path / name)

    threads = [threading.Thread(target=call, args=(name,), name=name) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(scored) == 1, scored
    assert got["a"] == got["b"] and set(got["a"]) == {"harness_capitals"}
    assert len(list((tmp_path / "cache" / "eval_base").glob("*.json"))) == 1


def test_batched_answers_equal_hflms_request_by_request(tiny_model, tmp_path, monkeypatch):
    """``BatchedLM`` (a batch's continuation tokens in and answers out in one copy each) answers
    every loglikelihood request as lm-eval's HFLM does, bit for bit on CPU: multiple-choice tasks
    (one-token continuations grouped by context) and the held-out likelihood alike."""
    from lm_eval.models.huggingface import HFLM

    from harness.evaluate import HELDOUT_TASK, write_heldout
    from harness.pack_scoring import BatchedLM

    model, tokenizer = tiny_model
    prompt = tokenizer("Question: two?\nAnswer:")["input_ids"]
    heldout = write_heldout([{"input_ids": prompt + tokenizer(f" {w}")["input_ids"],
                              "labels": [-100] * len(prompt) + tokenizer(f" {w}")["input_ids"]} for w in ("two", "three x")],
                            tokenizer, tmp_path / "heldout.jsonl")
    tasks = ["harness_capitals", "harness_agreement", "harness_add1d", HELDOUT_TASK]
    answers = {}
    for cls in (HFLM, BatchedLM):
        got = answers.setdefault(cls.__name__, [])
        own = cls.__dict__["_loglikelihood_tokens"]
        monkeypatch.setattr(cls, "_loglikelihood_tokens",
                            lambda self, requests, *a, _own=own, _got=got, **k: _got.append(
                                ([r[1:] for r in requests], _own(self, requests, *a, **k))) or _got[-1][1])
        scores = score(model, tokenizer, tasks, device="cpu", batch_size=4, limit=6, heldout_path=heldout,
                       make_lm=cls)
        answers[cls.__name__ + "_scores"] = scores
    assert answers["HFLM"] and len(answers["HFLM"]) == len(answers["BatchedLM"])
    for (requests, expected), (same_requests, got) in zip(answers["HFLM"], answers["BatchedLM"], strict=True):
        assert same_requests == requests and got == expected
    assert answers["HFLM_scores"] == answers["BatchedLM_scores"]


def test_a_token_budget_cuts_batches_by_tokens_and_answers_as_hflm_does(tiny_model, tmp_path, monkeypatch):
    """``eval.batch_tokens``: each forward holds at most that many tokens padded (rows x the
    batch's widest input) or one request, so short requests share a forward; the answers are
    HFLM's (its batches of ``batch_size``) up to the rounding of other shapes, and the scores
    those of ``batch_size`` batches. The held-out task's long rows and the probes' short ones."""
    from lm_eval.models.huggingface import HFLM

    from harness.evaluate import HELDOUT_TASK, write_heldout
    from harness.pack_scoring import BatchedLM

    model, tokenizer = tiny_model
    prompt = tokenizer("Question: two?\nAnswer:")["input_ids"]
    words = [" two", " three x" * 40, " four"]
    heldout = write_heldout([{"input_ids": prompt + tokenizer(w)["input_ids"],
                              "labels": [-100] * len(prompt) + tokenizer(w)["input_ids"]} for w in words],
                            tokenizer, tmp_path / "heldout.jsonl")
    tasks = ["harness_capitals", "harness_agreement", "harness_add1d", HELDOUT_TASK]
    budget = 64
    shapes, answers, scores = {}, {}, {}
    model_call = HFLM._model_call

    def counted(self, inputs, *args, **kwargs):
        shapes.setdefault(type(self).__name__ + str(getattr(self, "batch_tokens", None)), []).append(tuple(inputs.shape))
        return model_call(self, inputs, *args, **kwargs)

    monkeypatch.setattr(HFLM, "_model_call", counted)
    for name, make_lm, tokens in (("hflm", HFLM, None), ("rows", BatchedLM, None), ("tokens", BatchedLM, budget)):
        own = make_lm.__dict__["_loglikelihood_tokens"]
        got = answers.setdefault(name, [])
        monkeypatch.setattr(make_lm, "_loglikelihood_tokens",
                            lambda self, requests, *a, _own=own, _got=got, **k: _got.append(_own(self, requests, *a, **k))
                            or _got[-1])
        scores[name] = score(model, tokenizer, tasks, device="cpu", batch_size=4, batch_tokens=tokens, limit=12,
                             heldout_path=heldout, make_lm=make_lm)
        monkeypatch.setattr(make_lm, "_loglikelihood_tokens", own)
    by_tokens = shapes["BatchedLM64"]
    assert all(rows * width <= budget or rows == 1 for rows, width in by_tokens), by_tokens
    assert any(rows > 4 for rows, _ in by_tokens), by_tokens  # short requests: more than batch_size a forward
    assert any(rows * width > budget for rows, width in by_tokens), by_tokens  # a long held-out row alone
    assert len(by_tokens) < len(shapes["BatchedLMNone"]) == len(shapes["HFLMNone"])
    for expected, got in zip(answers["hflm"], answers["tokens"], strict=True):
        assert [g for _, g in got] == [g for _, g in expected]
        assert [lp for lp, _ in got] == pytest.approx([lp for lp, _ in expected], rel=1e-5, abs=1e-5)
    assert answers["rows"] == answers["hflm"]
    for task, metrics in scores["hflm"].items():
        for metric, value in metrics.items():
            assert scores["tokens"][task][metric]["value"] == pytest.approx(value["value"], rel=1e-5, abs=1e-6), (task, metric)

@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_batched_scoring_waits_on_the_gpu_once_per_request_list():
    """``BatchedLM`` copies each batch in without waiting on the device and reads every batch's
    answers out in one wait: on a GPU that other runs train on, each wait is a turn on it (a
    pack's scoring took 30-53 s beside three training packs in `rag1`, 2026-12-07). CUDA's sync
    debug mode warns at each wait; those of harness/pack_scoring.py are counted (the model's own,
    in transformers, are not its to remove). The answers are those the CPU gives."""
    import os
    import warnings

    import torch

    from harness.models import build_model, load_tokenizer
    from harness.pack_scoring import BatchedLM

    tokenizer_dir = os.environ.get("HARNESS_TEST_TOKENIZER")  # a lent GPU without the embedded package
    run = compose_run(["model=tiny", *([f"model.tokenizer={tokenizer_dir}"] if tokenizer_dir else [])])
    tokenizer = load_tokenizer(run.model)
    texts = [("The capital of France is", " Paris"), ("Two and two make", " four"), ("A cat sat on", " the mat"),
             ("Question: two?\nAnswer:", " two"), ("Question: two?\nAnswer:", " three"), ("Hello", " world again")]
    requests = [((c, x), tokenizer(c)["input_ids"], tokenizer(x)["input_ids"]) for c, x in texts]
    answers = {}
    model = build_model(run.model, run.quant, "32-true", "cpu")
    for device in ("cpu", "cuda"):
        model = model.to(device)
        lm = BatchedLM(pretrained=model, tokenizer=tokenizer, batch_size=2, device=device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if device == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            try:
                answers[device] = lm._loglikelihood_tokens(requests, disable_tqdm=True)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        waits = [w for w in caught if w.filename.endswith("pack_scoring.py")]
    assert len(waits) == 1, [(w.lineno, str(w.message)[:80]) for w in waits]
    assert len(answers["cuda"]) == len(requests)
    for (cpu_sum, cpu_greedy), (gpu_sum, gpu_greedy) in zip(answers["cpu"], answers["cuda"], strict=True):
        assert gpu_sum == pytest.approx(cpu_sum, rel=1e-4, abs=1e-4) and gpu_greedy == cpu_greedy


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_batches_cut_by_tokens_hand_their_memory_back_on_the_gpu():
    """``eval.batch_tokens`` on a GPU: each batch's freed memory goes back to the device, so what
    scoring leaves reserved is not a block per batch size (`rag2`, 2026-12-07: packs' scoring
    reserved up to 34 GiB for 9 GiB allocated). The batches' logits here are 10-50 MiB each."""
    import os

    import torch

    from harness.models import build_model, load_tokenizer
    from harness.pack_scoring import BatchedLM

    tokenizer_dir = os.environ.get("HARNESS_TEST_TOKENIZER")
    run = compose_run(["model=tiny", *([f"model.tokenizer={tokenizer_dir}"] if tokenizer_dir else [])])
    tokenizer = load_tokenizer(run.model)
    model = build_model(run.model, run.quant, "32-true", "cpu").to("cuda")
    words = "the cat sat on a mat while two dogs ran far away".split()
    requests = []
    for n in range(1, 40):  # contexts of many lengths: batches of many sizes near the budget
        context = " ".join(words[i % len(words)] for i in range(n))
        requests.append(((context, " end"), tokenizer(context)["input_ids"], tokenizer(" end")["input_ids"]))
    lm = BatchedLM(pretrained=model, tokenizer=tokenizer, batch_size=4, batch_tokens=256, device="cuda")
    torch.cuda.synchronize()
    before = torch.cuda.memory_reserved()
    answers = lm._loglikelihood_tokens(requests, disable_tqdm=True)
    assert len(answers) == len(requests)
    assert torch.cuda.memory_reserved() - before <= 8 * 2**20, (before, torch.cuda.memory_reserved())
