"""Progress for long work: a rich bar on a terminal; in a log (stderr not a terminal), a plain line
at most every :data:`LOG_INTERVAL` seconds, so that a long run leaves a trace and a short one
prints nothing; nothing at all when disabled."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

Advance = Callable[..., None]

#: Seconds between two progress lines written to a log.
LOG_INTERVAL = 30.0


@contextmanager
def progress_bar(
    description: str, *, total: int, enabled: bool = True, log_interval: float = LOG_INTERVAL
) -> Iterator[Advance]:
    """Yield ``advance(**fields)``, which moves the bar one step and shows ``fields`` (e.g. loss)."""
    console = Console(stderr=True)
    if not enabled:
        yield lambda **_: None
        return
    if not console.is_terminal:
        yield _log_lines(description, total, log_interval)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=total, status="")

        def advance(**fields: float) -> None:
            status = " ".join(f"{key}={value:.4g}" for key, value in fields.items())
            progress.update(task, advance=1, status=status)

        yield advance


def _log_lines(description: str, total: int, interval: float) -> Advance:
    """An ``advance`` that writes ``cells 12/108, 5m20s: running=2`` to stderr every ``interval``
    seconds, and the last step too once it has written any (a short task stays silent)."""
    started = last = time.monotonic()
    done = 0
    wrote = False

    def advance(**fields: float) -> None:
        nonlocal done, last, wrote
        done += 1
        now = time.monotonic()
        if now - last < interval and not (wrote and done >= total):
            return
        last, wrote = now, True
        minutes, seconds = divmod(int(now - started), 60)
        status = ", ".join(f"{key}={value:.4g}" for key, value in fields.items())
        print(
            f"{description} {done}/{total}, {minutes}m{seconds:02d}s{': ' + status if status else ''}",
            file=sys.stderr,
            flush=True,
        )

    return advance
