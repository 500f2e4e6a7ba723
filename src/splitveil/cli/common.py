"""What every command module of the CLI shares: the console tables print to, and the checkpoint cache."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from splitveil.checkpoint import CheckpointCache


def console() -> Console:
    """Stdout console; piped output gets a wide fixed width so tables are never wrapped."""
    terminal = Console()
    return terminal if terminal.is_terminal else Console(width=160)


def checkpoint_cache(cache_dir: Path | None) -> CheckpointCache:
    """``cache_dir``, or ``$SPLITVEIL_CACHE``, or ``~/.cache/splitveil``."""
    from splitveil.checkpoint import CheckpointCache

    return CheckpointCache.default(cache_dir)
