"""Progress bars that suit a terminal and a log file alike: one helper for every long loop of hiersrec.

tqdm redraws its bar with carriage returns several times a second. On a terminal that is what one wants;
written to a file, a pipe or a CI log it floods them with one long line of redraws. `progress` returns a
plain tqdm bar on a terminal, and otherwise one that writes a whole line at most every 30 seconds (plus the
first and, unless ``leave=False``, the last state), without carriage returns or cursor movements.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm.std import tqdm

LOG_INTERVAL_S = 30.0
# tqdm moves the cursor with ANSI sequences to draw nested bars (position=...).
_CURSOR_MOVES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def progress(iterable: Iterable[Any] | None = None, **options: Any) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual one: ``total=``, then ``update``), quiet when not on a terminal.

    Args:
        iterable: what to iterate over, or None for a bar updated by hand.
        **options: tqdm's options (``desc``, ``total``, ``unit``, ``disable``, ``leave``, ``file``...). When the
            stream (``file``, default stderr) is not a terminal, ``mininterval`` defaults to
            `LOG_INTERVAL_S` and every redraw becomes one line.

    Returns:
        The bar; use it as tqdm (iterate, ``with``, ``update``, ``set_postfix``, ``close``).

    Example:
        >>> for batch in progress(range(3), desc="batches", disable=True):
        ...     pass
    """
    stream = options.pop("file", None) or sys.stderr
    if not _is_terminal(stream):
        options.setdefault("mininterval", LOG_INTERVAL_S)
        options.setdefault("ascii", True)  # no block characters in a log file
        stream = _WholeLines(stream)
    return tqdm(iterable, file=stream, **options)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class _WholeLines:
    """A stream wrapper that turns tqdm's in-place redraws into whole lines (and drops blank clears)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        for piece in re.split(r"[\r\n]", _CURSOR_MOVES.sub("", text)):
            if piece.strip():
                self._stream.write(piece.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        self._stream.flush()
