"""Instruction data: load, normalize, template, tokenize, split, pack.

Plain builder functions; batching the finished splits is :mod:`harness.batches`. The pipeline
is::

    load_examples(cfg)            -> [{"instruction", "input", "output"}], stats
    tokenize_examples(ex, tok, cfg) -> [{"input_ids", "labels"}], stats  (cached for large data)
    build_splits(cfg, tok)        -> {"train", "val", "test"}, stats

Every user error (missing/empty/malformed/non-UTF-8 file, missing field, unreachable hub,
a tokenizer without a chat template) is a :class:`DataError` (or, for a path that does not
exist, :class:`~harness.paths.MissingPathError`) with a one-line message naming the config
key, the file and the line or record, raised before tokenization starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

from . import models
from .paths import MissingPathError, atomic_write, cache_dir, is_pypi_path, resolve_pypi_path
from .schema import DataConfig

log = logging.getLogger("harness.data")

IGNORE_INDEX = -100

# Files at least this large have their normalized examples cached (small files parse in
# milliseconds, so caching them would only litter the cache). Tests lower it.
CACHE_MIN_BYTES = 8 << 20
# Bump when parsing or normalization changes, so stale caches are ignored.
CACHE_VERSION = 1
_FINGERPRINT_BYTES = 1 << 20
# Data of at least this many examples has its tokenized form cached, so sweep trials on the same
# data and tokenizer tokenize it once (the embedded 11k examples take seconds). Tests lower it.
TOKENIZED_CACHE_MIN_EXAMPLES = 2000
# Bump when templating or tokenizing changes, so stale tokenized caches are ignored.
TOKENIZED_CACHE_VERSION = 1

ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)

# ShareGPT speaker names per record layout: {"conversations": [{"from", "value"}]} or
# {"messages": [{"role", "content"}]}.
_LAYOUTS = {
    "conversations": ("from", "value", "human", "gpt"),
    "messages": ("role", "content", "user", "assistant"),
}
# data.roles=any: the common spellings of the two speakers, in either layout and any case.
# data.roles=strict (the embedded configs): exactly the layout's own names above, so the
# embedded ShareGPT file yields the examples (and splits) it always has.
USER_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant", "chatgpt", "bard", "model")


class DataError(ValueError):
    """A user error in the data or data config, reported as one line naming the file and line."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- loading


def load_examples(cfg: DataConfig) -> tuple[list[dict], dict]:
    """Load and normalize the examples named by ``cfg`` (a file or an HF hub dataset).

    Returns ``(examples, stats)``: every example is ``{"instruction", "input", "output"}``
    (strings); ShareGPT records contribute their first human -> assistant turn only (after a
    leading system turn), and records without one are skipped and counted. ``stats`` has
    ``source``, ``records_read``, ``records_recovered`` (int when a truncated JSON array was
    recovered, else None), ``truncated_file``, ``examples``, ``skipped_records``,
    ``skip_reasons``, ``human_first`` (ShareGPT: records whose first turn is the human's,
    else None) and ``from_cache``.

    Raises :class:`DataError` (or :class:`MissingPathError` for a missing file) with a
    one-line message.
    """
    if cfg.hf_name is not None:
        records, locate = _read_hub(cfg)
        examples, stats = _normalize(records, locate, cfg.format, f"data.hf_name={cfg.hf_name}", cfg.roles)
        stats.update(source=f"hf:{cfg.hf_name}" + (f"/{cfg.hf_subset}" if cfg.hf_subset else "")
                     + f"[{cfg.hf_split}]", records_recovered=None, truncated_file=False, from_cache=False)
        _log_loaded(stats)
        return examples, stats

    path = _resolve_file(cfg.path)
    where = f"data.path={cfg.path}"
    size = path.stat().st_size
    cache = _cache_paths(path, size) if size >= CACHE_MIN_BYTES else None
    key = _cache_key(path, size, cfg.format, cfg.roles) if cache else None
    if cache and (hit := _read_cache(cache, key)) is not None:
        examples, stats = hit
        _check_truncation_allowed(stats, cfg, where)
        stats.update(source=str(path), from_cache=True)
        _log_loaded(stats, cached=cache[0])
        return examples, stats

    records, locate, recovered = _read_file(path, where, cfg.recover_truncated)
    examples, stats = _normalize(records, locate, cfg.format, where, cfg.roles)
    stats.update(source=str(path), records_recovered=recovered, truncated_file=recovered is not None,
                 from_cache=False)
    if cache:
        _write_cache(cache, key, examples, stats)
    _log_loaded(stats)
    return examples, stats


def _log_loaded(stats: dict, cached: Path | None = None) -> None:
    if stats["truncated_file"]:
        log.info("recovered %s complete records from a truncated JSON array%s",
                 f"{stats['records_recovered']:,}", f" (cached in {cached})" if cached else "")
    log.info("loaded %s examples from %s (%s records read, %s skipped: %s)",
             f"{stats['examples']:,}", stats["source"], f"{stats['records_read']:,}",
             f"{stats['skipped_records']:,}", dict(stats["skip_reasons"]) or "none")


def _resolve_file(spec: str) -> Path:
    if is_pypi_path(spec):
        try:
            return resolve_pypi_path(spec)
        except MissingPathError as exc:
            raise MissingPathError(f"data.path={exc}") from None
    path = Path(os.path.expanduser(spec))
    if path.is_dir():
        raise DataError(f"data.path={spec}: is a directory, expected a JSON or JSONL file")
    if not path.is_file():
        raise MissingPathError(f"data.path={spec}: no such file")
    return path


def _read_hub(cfg: DataConfig) -> tuple[list, Any]:
    where = f"data.hf_name={cfg.hf_name}"
    if not models.hub_reachable():
        raise DataError(
            f"{where}: the HF hub is not reachable (no network or HF_HUB_OFFLINE=1); use a local "
            f"file instead: data=alpaca_file or data=sharegpt_file with data.path=/path/to/file.jsonl"
        )
    import datasets

    try:
        rows = datasets.load_dataset(cfg.hf_name, cfg.hf_subset, split=cfg.hf_split)
    except Exception as exc:  # not found, gated, bad split...: all mean "cannot load this dataset"
        detail = _one_line(str(exc))[:200] or "no detail"
        raise DataError(f"{where}: could not load from the HF hub ({type(exc).__name__}: {detail})") from exc
    return list(rows), lambda i: f"{where} row {i}"


def _read_file(path: Path, where: str, recover: bool) -> tuple[list, Any, int | None]:
    """Parse a JSON array or JSONL file; returns records, a locator and the recovered count."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{where} line {line} (byte offset {exc.start}): not valid UTF-8 ({exc.reason}, "
            f"byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        ) from None
    del raw
    start = len(text) - len(text.lstrip())
    if start == len(text):
        raise DataError(f"{where}: the file is empty")
    if text[start] == "[":
        records, recovered = _parse_array(text, start, where, recover)
        return records, lambda i: f"{where} record {i}", recovered
    records, lines = _parse_jsonl(text, where)
    return records, lambda i: f"{where} line {lines[i]}", None


def _parse_array(text: str, start: int, where: str, recover: bool) -> tuple[list, int | None]:
    try:
        records = json.loads(text)
        if not records:
            raise DataError(f"{where}: the JSON array has no records")
        return records, None
    except RecursionError:
        raise DataError(f"{where}: {_TOO_DEEP}") from None
    except json.JSONDecodeError as exc:
        if not _hits_end(text, exc):
            raise DataError(f"{where} line {exc.lineno} col {exc.colno}: invalid JSON ({exc.msg})") from None
        if not recover:
            raise DataError(
                f"{where}: truncated JSON array (the file ends inside a record at line {exc.lineno}); "
                "set data.recover_truncated=true to keep the complete records"
            ) from None
    return _recover_array(text, start, where)


_TOKEN_FRAGMENT = re.compile(r"[\w.+\-]*")
_TOO_DEEP = "JSON nested deeper than the parser can read (a record of records thousands of levels deep: a corrupt file?)"


def _hits_end(text: str, exc: json.JSONDecodeError) -> bool:
    """Whether a decode error means "the text ran out" (truncation), not a malformed record."""
    if exc.msg.startswith("Unterminated string"):
        return True  # only reported when the scan reaches the end of the text
    if exc.msg.startswith("Extra data"):
        return False  # the array closed; junk follows
    # Otherwise the error must sit at the end, or on a cut literal/number (`tr`, `1.`).
    rest = text[exc.pos:].strip()
    return len(rest) <= 12 and _TOKEN_FRAGMENT.fullmatch(rest) is not None


def _recover_array(text: str, start: int, where: str) -> tuple[list, int]:
    """Decode a truncated array record by record, keeping the records before the cut."""
    decoder = json.JSONDecoder()
    records: list = []
    pos, end = start + 1, len(text)

    def skip_ws(i: int) -> int:
        while i < end and text[i] in " \t\r\n":
            i += 1
        return i

    pos = skip_ws(pos)
    while pos < end:
        try:
            record, pos = decoder.raw_decode(text, pos)
        except RecursionError:
            raise DataError(f"{where} line {text.count(chr(10), 0, pos) + 1}: {_TOO_DEEP}") from None
        except json.JSONDecodeError as exc:
            if _hits_end(text, exc):
                break  # the truncated last record
            raise DataError(f"{where} line {exc.lineno} col {exc.colno}: invalid JSON ({exc.msg})") from None
        records.append(record)
        pos = skip_ws(pos)
        if pos < end and text[pos] == ",":
            pos = skip_ws(pos + 1)
        elif pos < end:
            # A complete array would have parsed in one go, so "]" here means junk after it.
            line = text.count("\n", 0, pos) + 1
            raise DataError(f"{where} line {line}: invalid JSON (expected ',' between records, got {text[pos]!r})")
    if not records:
        raise DataError(f"{where}: truncated JSON array with no complete record")
    return records, len(records)


def _parse_jsonl(text: str, where: str) -> tuple[list, list[int]]:
    records, lines = [], []
    # Split on "\n" only: str.splitlines() also splits on U+2028 and friends, which JSON
    # strings may hold unescaped.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except RecursionError:
            raise DataError(f"{where} line {number}: {_TOO_DEEP}") from None
        except json.JSONDecodeError as exc:
            if not records and _is_single_object(text):
                raise DataError(f"{where}: holds a single JSON object; expected a JSON array of "
                                "records or JSONL (one record per line)") from None
            raise DataError(f"{where} line {number}: invalid JSON ({exc.msg})") from None
        lines.append(number)
    return records, lines


def _is_single_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (json.JSONDecodeError, RecursionError):
        return False


# --------------------------------------------------------------------------- normalizing


def _normalize(records: list, locate, fmt: str, where: str, roles: str = "strict") -> tuple[list[dict], dict]:
    """Turn raw records into examples; field errors raise, unusable conversations are counted.
    ``roles``: ``data.roles`` (ShareGPT speaker names: ``strict`` or ``any`` common spelling)."""
    examples: list[dict] = []
    reasons: Counter = Counter()
    seen_roles: Counter = Counter()
    human_first = 0 if fmt == "sharegpt" else None
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"{locate(i)}: expected a JSON object, got {type(record).__name__}")
        if fmt == "alpaca":
            example, reason = _alpaca_example(record, locate(i)), None
        else:
            example, reason, first_human = _sharegpt_example(record, locate(i), roles, seen_roles)
            human_first += first_human
        if example is not None and (bad := _SURROGATE.search("".join(example.values()))):
            raise DataError(f"{locate(i)}: holds a lone surrogate (\\u{ord(bad.group()):04x} without its pair), which is "
                            "not Unicode text and cannot be tokenized; fix or remove that record")
        if example is not None and not (example["instruction"].strip() and example["output"].strip()):
            example, reason = None, "empty_text"
        if example is not None and (size := sum(map(len, example.values()))) > MAX_EXAMPLE_CHARS:
            raise DataError(f"{locate(i)}: one example of {size:,} characters, over the {MAX_EXAMPLE_CHARS:,}-character "
                            "limit (a mis-split or corrupt file?)")
        if example is None:
            reasons[reason] += 1
        else:
            examples.append(example)
    if not examples:
        found = ""
        if seen_roles:
            common = ", ".join(f"{name!r} x{n}" for name, n in seen_roles.most_common(6))
            expected = ("human then gpt ('conversations') or user then assistant ('messages'), exactly (data.roles=strict; "
                        "data.roles=any takes human/user then gpt/assistant in any case)" if roles == "strict" else
                        f"a user turn ({'/'.join(USER_ROLES)}) then an assistant turn ({'/'.join(ASSISTANT_ROLES)}), any case")
            found = f"; the speaker roles found are {common}, expected {expected}"
        raise DataError(f"{where}: no usable {fmt} examples in {len(records)} records "
                        f"(skipped: {dict(reasons)}){found}; is data.format={fmt} right?")
    stats = dict(records_read=len(records), examples=len(examples), skipped_records=sum(reasons.values()),
                 skip_reasons=dict(reasons), human_first=human_first)
    return examples, stats


# Far beyond any max_seq_len (about 250k tokens): an example this long is a broken file, and
# tokenizing it would take minutes before any other check could fail.
MAX_EXAMPLE_CHARS = 1_000_000
# JSON may escape half of a surrogate pair (\ud800); Python decodes it to a str no encoder takes.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _field(record: dict, key: str, loc: str, optional: bool = False) -> str:
    if key not in record or (optional and record[key] is None):
        if optional:
            return ""
        raise DataError(f"{loc}: missing field {key!r}")
    value = record[key]
    if not isinstance(value, str):
        raise DataError(f"{loc}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def _alpaca_example(record: dict, loc: str) -> dict:
    return {
        "instruction": _field(record, "instruction", loc),
        "input": _field(record, "input", loc, optional=True),
        "output": _field(record, "output", loc),
    }


def _sharegpt_example(record: dict, loc: str, roles: str = "strict",
                      seen: Counter | None = None) -> tuple[dict | None, str | None, int]:
    """The first human -> assistant turn of a conversation: (example, skip reason, human-first).
    ``roles=strict`` takes the layout's own speaker names only, ``any`` the common spellings in
    any case; ``seen`` counts the speaker roles met (for the error when none match)."""
    layout = next((k for k in _LAYOUTS if k in record), None)
    if layout is None:
        raise DataError(f"{loc}: missing field 'conversations' (or 'messages')")
    turns = record[layout]
    if not isinstance(turns, list):
        raise DataError(f"{loc}: field {layout!r} must be a list, got {type(turns).__name__}")
    if turns and all(isinstance(t, str) for t in turns):
        # GAIR/lima style: a plain list of strings alternating user, assistant.
        if len(turns) < 2:
            return None, "no_assistant_reply", 1
        return {"instruction": turns[0], "input": "", "output": turns[1]}, None, 1
    role_key, text_key, user, assistant = _LAYOUTS[layout]
    parsed = []
    for j, turn in enumerate(turns[:3]):  # only the (system,) user, assistant turns are used
        tloc = f"{loc} {layout}[{j}]"
        if not isinstance(turn, dict):
            raise DataError(f"{tloc}: expected an object with {role_key!r} and {text_key!r}, got {type(turn).__name__}")
        parsed.append((_field(turn, role_key, tloc), _field(turn, text_key, tloc)))
    if seen is not None:
        seen.update(role for role, _ in parsed)
    if roles == "strict":
        is_user, is_assistant, is_system = (lambda r: r == user), (lambda r: r == assistant), (lambda r: r == "system")
    else:
        is_user = lambda r: r.strip().lower() in USER_ROLES  # noqa: E731
        is_assistant = lambda r: r.strip().lower() in ASSISTANT_ROLES  # noqa: E731
        is_system = lambda r: r.strip().lower() == "system"  # noqa: E731
    first_human = int(bool(parsed) and is_user(parsed[0][0]))
    if parsed and is_system(parsed[0][0]):
        parsed = parsed[1:]
    if not parsed or not is_user(parsed[0][0]):
        return None, "not_human_first", first_human
    if len(parsed) < 2 or not is_assistant(parsed[1][0]):
        return None, "no_assistant_reply", first_human
    return {"instruction": parsed[0][1], "input": "", "output": parsed[1][1]}, None, first_human


# --------------------------------------------------------------------------- cache


def _cache_paths(path: Path, size: int) -> tuple[Path, Path]:
    base = cache_dir() / "data" / f"{path.stem}-{size}"
    return base.with_name(base.name + ".jsonl"), base.with_name(base.name + ".stats.json")


def _cache_key(path: Path, size: int, fmt: str, roles: str = "strict") -> dict:
    """What must match for a cache hit: size plus a hash of the head and tail of the file.

    The name already holds the stem and size; the hash makes a different file of the same
    name and size miss (a truncated file differs at its tail) without reading all of it.
    """
    digest = hashlib.sha256()
    with path.open("rb") as f:
        digest.update(f.read(_FINGERPRINT_BYTES))
        f.seek(max(0, size - _FINGERPRINT_BYTES))
        digest.update(f.read(_FINGERPRINT_BYTES))
    key = {"version": CACHE_VERSION, "size": size, "sha256_head_tail": digest.hexdigest(), "format": fmt}
    if fmt == "sharegpt" and roles != "strict":  # strict keeps the key (and the caches) it always had
        key["roles"] = roles
    return key


def _read_cache(cache: tuple[Path, Path], key: dict) -> tuple[list[dict], dict] | None:
    examples_path, stats_path = cache
    try:
        sidecar = json.loads(stats_path.read_text(encoding="utf-8"))
        if sidecar.get("key") != key:
            return None
        with examples_path.open(encoding="utf-8") as f:
            examples = [json.loads(line) for line in f]
    except (OSError, ValueError):
        return None  # absent or damaged: parse the file again
    stats = sidecar["stats"]
    if len(examples) != stats["examples"]:
        return None
    return examples, stats


def _write_cache(cache: tuple[Path, Path], key: dict, examples: list[dict], stats: dict) -> None:
    """Write examples and stats atomically, so readers never see half a file."""
    examples_path, stats_path = cache
    stored = {k: v for k, v in stats.items() if k not in ("source", "from_cache")}
    try:
        atomic_write(examples_path, lambda f: f.writelines(json.dumps(e, ensure_ascii=False) + "\n" for e in examples))
        atomic_write(stats_path, lambda f: json.dump({"key": key, "stats": stored}, f, indent=1))
    except OSError as exc:  # a read-only or full cache only costs the next run a re-parse
        log.warning("could not cache parsed data in %s: %s", examples_path.parent, exc)


def _check_truncation_allowed(stats: dict, cfg: DataConfig, where: str) -> None:
    if stats["truncated_file"] and not cfg.recover_truncated:
        raise DataError(f"{where}: truncated JSON array; set data.recover_truncated=true to keep "
                        "the complete records")


# --------------------------------------------------------------------------- templates


def check_template(tokenizer, cfg: DataConfig) -> None:
    """Fail fast (before loading data) when ``data.template=chat`` cannot work with this tokenizer."""
    if cfg.template == "chat" and not getattr(tokenizer, "chat_template", None):
        raise DataError("data.template=chat needs a model with a chat template (this tokenizer has "
                        "none); use data.template=alpaca")
    if tokenizer.eos_token_id is None:
        raise DataError("data.template: the tokenizer has no eos token, so responses cannot be terminated")


def _user_text(example: dict) -> str:
    return example["instruction"] + ("\n\n" + example["input"] if example["input"] else "")


def _alpaca_prompt(example: dict) -> str:
    template = ALPACA_PROMPT_INPUT if example["input"] else ALPACA_PROMPT_NO_INPUT
    return template.format(instruction=example["instruction"], input=example["input"])


_SENTINEL = "QZXRESPONSEQZX"


def _chat_turn_parts(tokenizer) -> tuple[str, list[int]]:
    """How the chat template wraps an assistant reply: (text before it, end-of-turn ids).

    Rendered once with a sentinel reply. Text the template puts between the generation prompt
    and the reply (e.g. an empty think block) becomes part of the trained response; the
    end-of-turn is kept up to and including eos, and eos is appended when it is missing.
    """
    user = [{"role": "user", "content": "Hi"}]
    try:
        prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": _SENTINEL}], tokenize=False)
    except Exception as exc:  # jinja errors from arbitrary templates
        raise DataError(f"data.template=chat: the model's chat template failed ({_one_line(exc)[:160]}); "
                        "use data.template=alpaca") from exc
    at = full.find(_SENTINEL)
    before = full[len(prompt):at] if at >= 0 and full.startswith(prompt) else ""
    after = full[at + len(_SENTINEL):] if at >= 0 else ""
    eos = tokenizer.eos_token_id
    end_ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    end_ids = end_ids[: end_ids.index(eos) + 1] if eos in end_ids else end_ids + [eos]
    return before, end_ids


def _render(examples: list[dict], tokenizer, cfg: DataConfig) -> tuple[list[str], list[str], list[int], bool]:
    """Prompt texts, response texts, end ids, and whether prompts get the tokenizer's specials."""
    responses = [e["output"] for e in examples]
    if cfg.template == "alpaca":
        # add_special_tokens on the prompt adds BOS for tokenizers that use one (Llama...).
        return [_alpaca_prompt(e) for e in examples], responses, [tokenizer.eos_token_id], True
    before, end_ids = _chat_turn_parts(tokenizer)
    conversations = [[{"role": "user", "content": _user_text(e)}] for e in examples]
    try:
        prompts = tokenizer.apply_chat_template(conversations, tokenize=False, add_generation_prompt=True)
    except Exception as exc:
        raise DataError(f"data.template=chat: the model's chat template failed ({_one_line(exc)[:160]}); "
                        "use data.template=alpaca") from exc
    # The template already writes BOS and friends, so the prompt gets no extra specials.
    return prompts, [before + r for r in responses], end_ids, False


# --------------------------------------------------------------------------- tokenizing


def _batched_ids(tokenizer, texts: list[str], add_special_tokens: bool, chunk: int = 1024) -> list[list[int]]:
    out: list[list[int]] = []
    for i in range(0, len(texts), chunk):
        enc = tokenizer(texts[i:i + chunk], add_special_tokens=add_special_tokens,
                        return_attention_mask=False, verbose=False)
        out.extend(enc["input_ids"])
    return out


def tokenize_examples(examples: list[dict], tokenizer, cfg: DataConfig) -> tuple[list[dict], dict]:
    """Template and tokenize examples into ``{"input_ids", "labels"}``.

    Prompt and response are tokenized separately and concatenated, so the prompt ids are
    exactly a prefix of the full ids; labels are -100 on the prompt unless
    ``cfg.train_on_prompt``. Examples longer than ``cfg.max_seq_len`` are dropped or cut to
    the first max_seq_len tokens (``cfg.overlong``); a cut example keeping no response token
    is dropped. Stats: ``examples_in``, ``overlong_dropped``, ``overlong_truncated``,
    ``examples_out``.
    """
    check_template(tokenizer, cfg)
    if not examples:
        return [], dict(examples_in=0, overlong_dropped=0, overlong_truncated=0, examples_out=0)
    prompts, responses, end_ids, prompt_specials = _render(examples, tokenizer, cfg)
    limit = cfg.max_seq_len
    prompt_ids = _batched_ids(tokenizer, prompts, prompt_specials)
    # A prompt that fills max_seq_len leaves no response token under either overlong rule, so
    # its (often long) response is never tokenized: that saves a large share of the time.
    fits = [i for i, p in enumerate(prompt_ids) if len(p) < limit]
    response_ids = _batched_ids(tokenizer, [responses[i] for i in fits], False)
    out: list[dict] = []
    dropped, truncated = len(examples) - len(fits), 0
    for i, r in zip(fits, response_ids, strict=True):
        p = prompt_ids[i]
        ids = p + r + end_ids
        labels = list(ids) if cfg.train_on_prompt else [IGNORE_INDEX] * len(p) + r + end_ids
        if len(ids) > limit:
            if cfg.overlong == "drop":
                dropped += 1
                continue
            ids, labels = ids[:limit], labels[:limit]
            truncated += 1
        out.append({"input_ids": ids, "labels": labels})
    stats = dict(examples_in=len(examples), overlong_dropped=dropped, overlong_truncated=truncated,
                 examples_out=len(out))
    log.info("tokenized %s examples (max_seq_len=%d, overlong=%s): %s dropped, %s truncated, %s kept",
             f"{len(examples):,}", limit, cfg.overlong, f"{dropped:,}", f"{truncated:,}", f"{len(out):,}")
    return out, stats


def tokenize_examples_cached(examples: list[dict], tokenizer, cfg: DataConfig) -> tuple[list[dict], dict]:
    """:func:`tokenize_examples`, through a cache in ``$HARNESS_CACHE/tokenized`` for data of at
    least ``TOKENIZED_CACHE_MIN_EXAMPLES`` examples.

    The cache key covers the examples' text, the tokenizer (its serialized fast tokenizer,
    chat template and special tokens) and the settings that change tokens: ``template``,
    ``max_seq_len``, ``overlong`` and ``train_on_prompt``. Split sizes, seeds and packing come
    later and do not enter it. A slow (Python) tokenizer is never cached. Stats gain
    ``tokenized_from_cache``.
    """
    key = _tokenized_key(examples, tokenizer, cfg) if len(examples) >= TOKENIZED_CACHE_MIN_EXAMPLES else None
    path = cache_dir() / "tokenized" / f"{key}.npz" if key else None
    if path is not None and (hit := _read_tokenized(path)) is not None:
        tokenized, stats = hit
        log.info("tokenized examples read from the cache (%s): %s kept", path.name, f"{len(tokenized):,}")
        return tokenized, {**stats, "tokenized_from_cache": True}
    tokenized, stats = tokenize_examples(examples, tokenizer, cfg)
    if path is not None:
        _write_tokenized(path, tokenized, stats)
    return tokenized, {**stats, "tokenized_from_cache": False}


def _tokenized_key(examples: list[dict], tokenizer, cfg: DataConfig) -> str | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    digest = hashlib.sha256()
    settings = {"version": TOKENIZED_CACHE_VERSION, "class": type(tokenizer).__name__,
                "chat_template": getattr(tokenizer, "chat_template", None),
                "special_tokens": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
                "eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.bos_token_id,
                "template": cfg.template, "max_seq_len": cfg.max_seq_len, "overlong": cfg.overlong,
                "train_on_prompt": cfg.train_on_prompt, "examples": len(examples)}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(backend.to_str().encode())
    for example in examples:
        for name in sorted(example):
            digest.update(f"\0{name}\0{example[name]}".encode())
    return digest.hexdigest()[:40]


def _write_tokenized(path: Path, tokenized: list[dict], stats: dict) -> None:
    """One flat array of ids, offsets, and per example the count of leading masked labels
    (labels are the ids, masked on the prompt; see :func:`tokenize_examples`)."""
    import numpy as np

    masked = [next((i for i, label in enumerate(e["labels"]) if label != IGNORE_INDEX), len(e["labels"]))
              for e in tokenized]
    if any(e["labels"][m:] != e["input_ids"][m:] for e, m in zip(tokenized, masked, strict=True)):
        return  # labels this layout cannot rebuild: leave them uncached rather than wrong
    ids = np.fromiter((i for e in tokenized for i in e["input_ids"]), dtype=np.int32)
    offsets = np.cumsum([0] + [len(e["input_ids"]) for e in tokenized], dtype=np.int64)
    try:
        atomic_write(path, lambda f: np.savez(f, ids=ids, offsets=offsets, masked=np.asarray(masked, dtype=np.int32),
                                              stats=np.asarray(json.dumps(stats))), binary=True)
    except OSError as exc:  # a read-only or full cache only costs the next run a re-tokenize
        log.warning("could not cache tokenized data in %s: %s", path.parent, exc)


def _read_tokenized(path: Path) -> tuple[list[dict], dict] | None:
    import numpy as np

    try:
        with np.load(path) as stored:
            ids, offsets, masked = stored["ids"].tolist(), stored["offsets"].tolist(), stored["masked"].tolist()
            stats = json.loads(str(stored["stats"]))
    except (OSError, ValueError, KeyError):
        return None  # absent or damaged: tokenize again
    if len(masked) != stats.get("examples_out") or len(offsets) != len(masked) + 1:
        return None
    tokenized = []
    for start, end, m in zip(offsets[:-1], offsets[1:], masked, strict=True):
        example_ids = ids[start:end]
        tokenized.append({"input_ids": example_ids, "labels": [IGNORE_INDEX] * m + example_ids[m:]})
    return tokenized, stats


# --------------------------------------------------------------------------- splits & packing


def split_examples(tokenized: list[dict], cfg: DataConfig) -> dict[str, list[dict]]:
    """Deterministic split by the data seed: test first, then val, then train (capped).

    test/val come from the same shuffled pool before the train cap, so ``train_size`` never
    changes them; the run seed is not involved.
    """
    need = cfg.test_size + cfg.val_size + 1
    if len(tokenized) < need:
        raise DataError(
            f"data: only {len(tokenized)} usable examples after tokenizing (max_seq_len={cfg.max_seq_len}, "
            f"overlong={cfg.overlong}); need at least data.test_size + data.val_size + 1 = {need}"
        )
    order = list(range(len(tokenized)))
    random.Random(cfg.seed).shuffle(order)
    test = order[: cfg.test_size]
    val = order[cfg.test_size: cfg.test_size + cfg.val_size]
    train = order[cfg.test_size + cfg.val_size:]
    if cfg.train_size is not None:
        train = train[: cfg.train_size]
    splits = {name: [tokenized[i] for i in idx] for name, idx in (("train", train), ("val", val), ("test", test))}
    _warn_shared_examples(splits)
    return splits


def _warn_shared_examples(splits: dict[str, list[dict]]) -> dict[str, int]:
    """Warn when val or test hold examples identical (token for token) to train's or to each
    other's: duplicates in the file put them on both sides of the split, and a held-out score on
    them measures memory. Returns the counts, e.g. ``{"test_in_train": 3}``."""
    seen = {name: {tuple(e["input_ids"]) for e in rows} for name, rows in splits.items()}
    shared = {f"{a}_in_{b}": sum(1 for e in splits[a] if tuple(e["input_ids"]) in seen[b])
              for a, b in (("val", "train"), ("test", "train"), ("test", "val"))}
    shared = {k: n for k, n in shared.items() if n}
    if shared:
        log.warning("data: the splits share examples (%s): the file holds duplicates, and held-out scores on them "
                    "measure memory; deduplicate the file for clean val/test numbers",
                    ", ".join(f"{n:,} {k.replace('_in_', ' examples also in ')}" for k, n in shared.items()))
    return shared


# --------------------------------------------------------------------------- arithmetic mix

# data.mix problems have a two-digit second operand; the harness_add1d probe's second operand is
# one digit (harness.lm_tasks.utils.ADD1D_MAX_SECOND_OPERAND), so no mix problem is a probe item.
MIX_OPERANDS = range(10, 100)


def arithmetic_mix(n: int, seed: int) -> list[dict]:
    """``n`` arithmetic question/answer examples (``{"instruction", "input", "output"}``, e.g.
    "What is 47 plus 25?" -> "72") for ``data.mix``: a + b and a - b (a >= b) with both operands
    in 10..99, 12,195 distinct problems, drawn without replacement in an order fixed by ``seed``
    (the pool is reshuffled and drawn again only when n exceeds it)."""
    pool = [(a, "plus", b) for a in MIX_OPERANDS for b in MIX_OPERANDS]
    pool += [(a, "minus", b) for a in MIX_OPERANDS for b in MIX_OPERANDS if a >= b]
    rng = random.Random(f"mix-{seed}")
    drawn: list[tuple] = []
    while len(drawn) < n:
        order = list(pool)
        rng.shuffle(order)
        drawn.extend(order[: n - len(drawn)])
    return [{"instruction": f"What is {a} {word} {b}?", "input": "", "output": str(a + b if word == "plus" else a - b)}
            for a, word, b in drawn]


def _add_mix(train: list[dict], tokenizer, cfg: DataConfig) -> tuple[list[dict], int]:
    """The training split with ``round(mix / (1 - mix) * len(train))`` arithmetic examples added
    (templated and tokenized like the others) and shuffled in by the data seed; all original
    examples are kept, and val/test are untouched. Returns (train, examples added)."""
    n_extra = round(cfg.mix / (1 - cfg.mix) * len(train))
    if n_extra == 0:
        return train, 0
    extra, tok_stats = tokenize_examples(arithmetic_mix(n_extra, cfg.seed), tokenizer, cfg)
    if tok_stats["overlong_dropped"]:
        log.warning("data.mix: %d of %d arithmetic examples are longer than data.max_seq_len=%d and were dropped",
                    tok_stats["overlong_dropped"], n_extra, cfg.max_seq_len)
    mixed = train + extra
    random.Random(f"mix-shuffle-{cfg.seed}").shuffle(mixed)
    log.info("data.mix=%s: added %s arithmetic examples to %s training examples", cfg.mix, f"{len(extra):,}",
             f"{len(train):,}")
    return mixed, len(extra)


def pack_examples(examples: list[dict], max_seq_len: int) -> list[dict]:
    """Greedily concatenate examples, in order, into sequences of at most ``max_seq_len``.

    Each example's first label becomes -100: in a packed row that position would otherwise
    make the previous example's last token predict this example's first token.
    """
    packed: list[dict] = []
    ids: list[int] = []
    labels: list[int] = []
    for example in examples:
        if ids and len(ids) + len(example["input_ids"]) > max_seq_len:
            packed.append({"input_ids": ids, "labels": labels})
            ids, labels = [], []
        ids.extend(example["input_ids"])
        labels.append(IGNORE_INDEX)
        labels.extend(example["labels"][1:])
    if ids:
        packed.append({"input_ids": ids, "labels": labels})
    return packed


def build_splits(cfg: DataConfig, tokenizer, loaded: tuple[list[dict], dict] | None = None) -> tuple[dict[str, list[dict]], dict]:
    """Load, tokenize, split and (if ``cfg.packing``) pack the training data.

    ``loaded``: the result of :func:`load_examples`, when the caller parsed the data already
    (to report data errors before loading the tokenizer or the model).

    Returns ``({"train", "val", "test"}, stats)``; stats merge :func:`load_examples` and
    :func:`tokenize_examples_cached` stats with ``n_train`` (rows, packed or not),
    ``n_train_examples`` (with the ``data.mix`` examples), ``mix_examples`` (how many were
    added), ``n_val``, ``n_test``, ``train_tokens``, ``train_target_tokens`` and ``packed``. Only
    the training split is ever mixed or packed.
    """
    check_template(tokenizer, cfg)  # cheap, and before the file is parsed
    examples, stats = loaded if loaded is not None else load_examples(cfg)
    stats = dict(stats)
    tokenized, tok_stats = tokenize_examples_cached(examples, tokenizer, cfg)
    stats.update(tok_stats)
    splits = split_examples(tokenized, cfg)
    splits["train"], stats["mix_examples"] = _add_mix(splits["train"], tokenizer, cfg)
    stats["n_train_examples"] = len(splits["train"])
    if cfg.packing:
        splits["train"] = pack_examples(splits["train"], cfg.max_seq_len)
    stats.update(
        n_train=len(splits["train"]), n_val=len(splits["val"]), n_test=len(splits["test"]),
        train_tokens=sum(len(e["input_ids"]) for e in splits["train"]),
        train_target_tokens=sum(sum(1 for t in e["labels"] if t != IGNORE_INDEX) for e in splits["train"]),
        packed=cfg.packing,
    )
    log.info("splits: train %s%s, val %s, test %s (%s train tokens)", f"{stats['n_train']:,}",
             f" packed rows from {stats['n_train_examples']:,} examples" if cfg.packing else "",
             f"{stats['n_val']:,}", f"{stats['n_test']:,}", f"{stats['train_tokens']:,}")
    return splits, stats
