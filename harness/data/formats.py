"""Normalising raw records (alpaca or ShareGPT layouts) into examples
``{"instruction", "input", "output"}``; reading the records is :mod:`harness.data.files`."""

from __future__ import annotations

import re
from collections import Counter

from ..errors import DataError

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

# Far beyond any max_seq_len (about 250k tokens): an example this long is a broken file, and
# tokenizing it would take minutes before any other check could fail.
MAX_EXAMPLE_CHARS = 1_000_000
# JSON may escape half of a surrogate pair (\ud800); Python decodes it to a str no encoder takes.
_SURROGATE = re.compile("[\ud800-\udfff]")


def normalize(records: list, locate, fmt: str, where: str, roles: str = "strict") -> tuple[list[dict], dict]:
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
        example, reason = _usable(example, reason, locate(i))
        if example is None:
            reasons[reason] += 1
        else:
            examples.append(example)
    if not examples:
        raise _no_examples_error(where, fmt, len(records), reasons, seen_roles, roles)
    stats = dict(records_read=len(records), examples=len(examples), skipped_records=sum(reasons.values()),
                 skip_reasons=dict(reasons), human_first=human_first)
    return examples, stats


def _usable(example: dict | None, reason: str | None, loc: str) -> tuple[dict | None, str | None]:
    """The example, or None and why it is skipped; text no tokenizer or run can take raises.
    The checks run in this order: a lone surrogate raises even in an empty example."""
    if example is None:
        return None, reason
    if bad := _SURROGATE.search("".join(example.values())):
        raise DataError(f"{loc}: holds a lone surrogate (\\u{ord(bad.group()):04x} without its pair), which is "
                        "not Unicode text and cannot be tokenized; fix or remove that record")
    if not (example["instruction"].strip() and example["output"].strip()):
        return None, "empty_text"
    if (size := sum(map(len, example.values()))) > MAX_EXAMPLE_CHARS:
        raise DataError(f"{loc}: one example of {size:,} characters, over the {MAX_EXAMPLE_CHARS:,}-character "
                        "limit (a mis-split or corrupt file?)")
    return example, None


def _no_examples_error(where: str, fmt: str, n_records: int, reasons: Counter, seen_roles: Counter,
                       roles: str) -> DataError:
    """The error for a file with no usable example, naming the speaker roles it does hold."""
    found = ""
    if seen_roles:
        common = ", ".join(f"{name!r} x{n}" for name, n in seen_roles.most_common(6))
        expected = ("human then gpt ('conversations') or user then assistant ('messages'), exactly (data.roles=strict; "
                    "data.roles=any takes human/user then gpt/assistant in any case)" if roles == "strict" else
                    f"a user turn ({'/'.join(USER_ROLES)}) then an assistant turn ({'/'.join(ASSISTANT_ROLES)}), any case")
        found = f"; the speaker roles found are {common}, expected {expected}"
    return DataError(f"{where}: no usable {fmt} examples in {n_records} records "
                     f"(skipped: {dict(reasons)}){found}; is data.format={fmt} right?")


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
    parsed = _first_turns(turns, layout, loc)
    if seen is not None:
        seen.update(role for role, _ in parsed)
    is_user, is_assistant, is_system = _role_tests(layout, roles)
    first_human = int(bool(parsed) and is_user(parsed[0][0]))
    if parsed and is_system(parsed[0][0]):
        parsed = parsed[1:]
    if not parsed or not is_user(parsed[0][0]):
        return None, "not_human_first", first_human
    if len(parsed) < 2 or not is_assistant(parsed[1][0]):
        return None, "no_assistant_reply", first_human
    return {"instruction": parsed[0][1], "input": "", "output": parsed[1][1]}, None, first_human


def _first_turns(turns: list, layout: str, loc: str) -> list[tuple[str, str]]:
    """(role, text) of the first three turns: only the (system,) user, assistant turns are used."""
    role_key, text_key = _LAYOUTS[layout][:2]
    parsed = []
    for j, turn in enumerate(turns[:3]):
        tloc = f"{loc} {layout}[{j}]"
        if not isinstance(turn, dict):
            raise DataError(f"{tloc}: expected an object with {role_key!r} and {text_key!r}, got {type(turn).__name__}")
        parsed.append((_field(turn, role_key, tloc), _field(turn, text_key, tloc)))
    return parsed


def _role_tests(layout: str, roles: str):
    """(is_user, is_assistant, is_system) speaker tests for ``data.roles`` in this layout."""
    user, assistant = _LAYOUTS[layout][2:]
    if roles == "strict":
        return (lambda r: r == user), (lambda r: r == assistant), (lambda r: r == "system")

    def spelled(names: tuple[str, ...]):
        return lambda r: r.strip().lower() in names

    return spelled(USER_ROLES), spelled(ASSISTANT_ROLES), spelled(("system",))
