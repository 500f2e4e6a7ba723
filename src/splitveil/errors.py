"""Exceptions raised by splitveil.

Every error a user can cause derives from :class:`SplitveilError`, so the CLI can print its
message as one clear line instead of a traceback. Messages name the problem *and* the fix.
"""

from __future__ import annotations


class SplitveilError(Exception):
    """Base class of all user-facing splitveil errors."""


class ConfigError(SplitveilError, ValueError):
    """An experiment spec or option is invalid (unknown key, wrong type, bad value)."""


class UnknownNameError(SplitveilError, KeyError):
    """A registry lookup named something that is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class DatasetNotFoundError(SplitveilError, FileNotFoundError):
    """A dataset's files are not where we looked; the message says how to get them."""


class InvalidCutError(SplitveilError, ValueError):
    """A cut point does not exist or more than one tensor would cross it."""


class CheckpointError(SplitveilError, ValueError):
    """A checkpoint is missing, corrupt, or does not match the model it is loaded into."""


class CapabilityError(SplitveilError, PermissionError):
    """An attack asked for (or was built without) a capability its threat model requires."""


class WireFormatError(SplitveilError, ValueError):
    """A request or response body is not a well-formed splitveil tensor (see ``splitveil.serve.codec``)."""


class ServeError(SplitveilError, RuntimeError):
    """The cloud server could not be reached, refused a request, or answered something unusable."""
