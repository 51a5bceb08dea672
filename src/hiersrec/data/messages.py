"""Short, single-line renderings of foreign text (library errors, cell values) for one-line error messages."""

from __future__ import annotations

EXCERPT_CHARS = 200


def one_line(text: object, limit: int = EXCERPT_CHARS) -> str:
    r"""``str(text)`` with whitespace runs (newlines included) collapsed, cut to ``limit`` characters.

    A parser's message can quote the rest of a file (an unclosed quote); an error line must stay one line.

    Example:
        >>> one_line("could not parse `a,b\\n1,2\\n", limit=19)
        'could not parse `a,...'
    """
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters (a cell of a broken file can hold megabytes)."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[:limit] + "..."
