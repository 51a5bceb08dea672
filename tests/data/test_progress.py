"""Issue 9: progress bars written to a log file or pipe do not flood it (hiersrec.progress)."""

from __future__ import annotations

import io

from hiersrec.progress import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_gets_whole_lines_at_most_every_30_s_issue_9():
    log = io.StringIO()
    for _ in progress(range(100_000), desc="evaluate", file=log):
        pass
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 2  # the first state and the last: the loop took less than 30 s
    assert lines[0].startswith("evaluate:   0%") and "100000/100000" in lines[1]


def test_manual_bars_nested_bars_and_closed_streams_stay_quiet_issue_9():
    log = io.StringIO()
    with progress(total=10, desc="outer", file=log) as outer, progress(total=5, position=1, file=log) as inner:
        outer.update(10)
        inner.update(5)
    assert "\x1b" not in log.getvalue() and "\r" not in log.getvalue()
    assert all(line.strip() for line in log.getvalue().splitlines())
    closed = io.StringIO()
    closed.close()
    bar = progress(total=1, file=closed, disable=True)  # isatty on a closed stream raises; nothing is written
    bar.close()


def test_a_terminal_gets_the_usual_redrawn_bar():
    screen = _Terminal()
    for _ in progress(range(3), file=screen, mininterval=0):
        pass
    assert "\r" in screen.getvalue() and "3/3" in screen.getvalue()


def test_disabled_bars_write_nothing():
    log = io.StringIO()
    for _ in progress(range(10), file=log, disable=True):
        pass
    assert log.getvalue() == ""
