"""Progress bars for long work (rich), silent when disabled or when output is not a terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

Advance = Callable[..., None]


@contextmanager
def progress_bar(description: str, *, total: int, enabled: bool = True) -> Iterator[Advance]:
    """Yield ``advance(**fields)``, which moves the bar one step and shows ``fields`` (e.g. loss)."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda **_: None
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
