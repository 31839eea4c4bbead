"""Reading raw records: a local JSON array or JSONL file (a truncated array too), or an HF hub
dataset. Turning records into examples is :mod:`harness.data.formats`."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .. import models
from ..errors import DataError
from ..paths import MissingPathError, is_pypi_path, resolve_pypi_path
from ..schema import DataConfig
from .common import one_line

_TOKEN_FRAGMENT = re.compile(r"[\w.+\-]*")
_TOO_DEEP = "JSON nested deeper than the parser can read (a record of records thousands of levels deep: a corrupt file?)"


def resolve_file(spec: str) -> Path:
    """The file ``data.path`` names (``pypi:`` paths included); a missing one or a folder raise."""
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


def read_hub(cfg: DataConfig) -> tuple[list, Any]:
    """The rows of ``data.hf_name`` and a locator (row index -> "where" text for errors)."""
    where = f"data.hf_name={cfg.hf_name}"
    # Looked up on the module at call time: tests replace models.hub_reachable.
    if not models.hub_reachable():
        raise DataError(
            f"{where}: the HF hub is not reachable (no network or HF_HUB_OFFLINE=1); use a local "
            f"file instead: data=alpaca_file or data=sharegpt_file with data.path=/path/to/file.jsonl"
        )
    import datasets

    try:
        rows = datasets.load_dataset(cfg.hf_name, cfg.hf_subset, split=cfg.hf_split)
    except Exception as exc:  # not found, gated, bad split...: all mean "cannot load this dataset"
        detail = one_line(str(exc))[:200] or "no detail"
        raise DataError(f"{where}: could not load from the HF hub ({type(exc).__name__}: {detail})") from exc
    return list(rows), lambda i: f"{where} row {i}"


def read_file(path: Path, where: str, recover: bool) -> tuple[list, Any, int | None]:
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
