"""Checkpoints as safetensors weights plus JSON metadata, and a cache keyed by a config hash.

Loading never unpickles: safetensors holds raw tensors only, and metadata is plain JSON. Writes go
to a temporary directory that is renamed into place, so a killed run never leaves a half-written
checkpoint that a later run would mistake for a finished one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from splitveil.errors import CheckpointError

WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "meta.json"

#: Bump when the meaning of cached checkpoints changes, so stale ones are not reused. Every key
#: hashes it, and every entry records it (``cache_format`` in its metadata).
#: 2: every setting is in the key at its value. Format 1 left some out at the values they had before
#: they existed (``train.schedule: constant``, the salted defense's ``smoothing: 0``).
CACHE_FORMAT = 2


def config_hash(payload: Any) -> str:
    """A stable 16-hex-digit hash of a JSON-serialisable ``payload`` (key order does not matter)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def environment_versions() -> dict[str, str]:
    """Versions recorded with every checkpoint, so a result can be traced to its software."""
    from splitveil import __version__

    return {"splitveil": __version__, "torch": torch.__version__, "python": platform.python_version()}


def save_checkpoint(directory: str | Path, model: nn.Module, metadata: dict[str, Any], *, replace: bool = True) -> Path:
    """Atomically write ``model``'s state dict and ``metadata`` into ``directory``.

    ``replace=False`` is for cache entries, which two processes may compute at once: the first
    complete entry wins and a later writer discards its copy, so a reader never sees an entry
    removed under it.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        state = {name: tensor.detach().contiguous().clone() for name, tensor in model.state_dict().items()}
        save_file(state, str(staging / WEIGHTS_FILE))
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str))
        if _complete(directory) and not replace:
            shutil.rmtree(staging)
            return directory
        if directory.exists():
            shutil.rmtree(directory)
        try:
            os.replace(staging, directory)
        except OSError:
            if replace or not _complete(directory):
                raise
            shutil.rmtree(staging)  # another writer finished first
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _complete(directory: Path) -> bool:
    return (directory / WEIGHTS_FILE).is_file() and (directory / METADATA_FILE).is_file()


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """The JSON metadata of the checkpoint in ``directory``."""
    path = Path(directory) / METADATA_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint metadata at {path}; train the model first (splitveil train)") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"checkpoint metadata {path} is corrupt ({exc}); delete the directory and retrain"
        ) from None


def load_weights(directory: str | Path, model: nn.Module) -> nn.Module:
    """Load the safetensors weights in ``directory`` into ``model`` (exact keys and shapes)."""
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"no weights at {path}; train the model first (splitveil train)")
    try:
        state = load_file(str(path))
    except SafetensorError as exc:
        raise CheckpointError(f"weights file {path} is corrupt ({exc}); delete the directory and retrain") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"weights in {path} do not fit {type(model).__name__}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shape {mismatched[:3]}; build the model with the "
            "options recorded in meta.json"
        )
    model.load_state_dict(state)
    return model


@dataclass(frozen=True)
class CheckpointCache:
    """Checkpoints stored under ``root/checkpoints/<config hash>/``; a finished entry is never recomputed.

    ``root`` is the cache directory a user names (``--cache-dir``, ``$SPLITVEIL_CACHE``), the same
    for ``CheckpointCache(root)`` and ``CheckpointCache.default(root)``.
    """

    root: Path

    @classmethod
    def default(cls, directory: str | Path | None = None) -> CheckpointCache:
        """The cache at ``directory`` if given, else at ``$SPLITVEIL_CACHE`` or ``~/.cache/splitveil``."""
        root = directory or os.environ.get("SPLITVEIL_CACHE") or Path.home() / ".cache" / "splitveil"
        return cls(Path(root))

    @property
    def checkpoints(self) -> Path:
        """The directory holding one subdirectory per cached checkpoint."""
        return self.root / "checkpoints"

    def path(self, key: str) -> Path:
        return self.checkpoints / key

    def store(self, key: str, model: nn.Module, metadata: dict[str, Any]) -> Path:
        """Write the entry ``key`` (the first complete writer wins), stamped with :data:`CACHE_FORMAT`."""
        return save_checkpoint(self.path(key), model, {**metadata, "cache_format": CACHE_FORMAT}, replace=False)

    def stale_entries(self) -> list[Path]:
        """Entries written with another cache format: their keys never match, so they are never reused."""
        if not self.checkpoints.is_dir():
            return []
        stale = []
        for entry in sorted(self.checkpoints.iterdir()):
            try:
                written = json.loads((entry / METADATA_FILE).read_text()).get("cache_format", 1)
            except (OSError, ValueError, AttributeError):
                continue  # not a finished entry (another writer's staging directory, or foreign files)
            if written != CACHE_FORMAT:
                stale.append(entry)
        return stale

    def miss_note(self) -> str:
        """A sentence for a cache miss that entries of an older splitveil may explain ("" if none)."""
        stale = self.stale_entries()
        if not stale:
            return ""
        return (
            f"{len(stale)} checkpoint(s) in {self.checkpoints} were written with another cache format "
            f"(this splitveil writes format {CACHE_FORMAT}) and are not reused; they retrain once, and "
            "the old entries can be deleted"
        )

    def miss_suffix(self) -> str:
        """:meth:`miss_note` as the end of a cache-miss error (``". Note: ..."``), or "" if there is none."""
        note = self.miss_note()
        return f". Note: {note}" if note else ""

    def contains(self, key: str) -> bool:
        entry = self.path(key)
        return (entry / WEIGHTS_FILE).is_file() and (entry / METADATA_FILE).is_file()
