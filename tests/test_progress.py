"""Progress in a log: plain lines for long work, silence for short work and when disabled."""

from __future__ import annotations

from splitveil.progress import progress_bar


def test_a_log_gets_plain_progress_lines_with_the_fields(capsys):
    with progress_bar("cells", total=3, log_interval=0.0) as advance:
        for _ in range(3):
            advance(running=2)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == ["cells 1/3", "cells 2/3", "cells 3/3"]
    assert lines[-1].endswith(": running=2")


def test_short_work_and_disabled_progress_write_nothing(capsys):
    for enabled in (True, False):
        with progress_bar("epochs", total=2, enabled=enabled) as advance:  # well under the 30 s interval
            advance(loss=0.5)
            advance(loss=0.25)
    assert capsys.readouterr().err == ""
