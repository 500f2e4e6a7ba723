"""Where loaders look for dataset files on local disk (splitveil never downloads data).

An explicit directory always wins and is the only place searched, so a typo is reported rather
than silently replaced by another copy. Otherwise ``$SPLITVEIL_DATA`` (read at call time) and
then any system-wide default locations are tried, in that order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

DATA_ENV_VAR = "SPLITVEIL_DATA"


def search_dirs(
    data_dir: str | Path | None,
    *,
    env_subdirs: Sequence[str],
    defaults: Sequence[str | Path] = (),
) -> list[Path]:
    """Directories to try, in order.

    ``env_subdirs`` are joined to ``$SPLITVEIL_DATA`` when it is set (``""`` means the variable's
    directory itself); ``defaults`` follow.
    """
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    dirs: list[Path] = []
    root = os.environ.get(DATA_ENV_VAR)
    if root:
        dirs.extend(Path(root).expanduser() / sub for sub in env_subdirs)
    dirs.extend(Path(d) for d in defaults)
    return dirs


def describe_dirs(dirs: Sequence[Path]) -> str:
    """The searched directories for a one-line error message."""
    return ", ".join(str(d) for d in dirs) if dirs else "(none)"
