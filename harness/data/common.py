"""What every data module shares: the error type, the label mask and the logger."""

from __future__ import annotations

import logging

# One logger for the whole package, under the name the single module had: harness.run quiets
# "harness.data" while it pre-reads the file, and tests capture it by that name.
log = logging.getLogger("harness.data")

# The label of a position that is not trained on (the prompt, a packed example's first token).
IGNORE_INDEX = -100


def one_line(text: str) -> str:
    """``text`` with its whitespace runs (newlines included) collapsed, for a one-line error."""
    return " ".join(str(text).split())
