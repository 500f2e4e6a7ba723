"""Components registered outside splitveil: a spec's ``plugins`` are imported before its names resolve.

A plugin is an importable Python module that registers models, datasets, attacks, defenses or metrics
when imported (``@register_defense``, ``ATTACKS.register(...)``). A spec lists it by module name::

    plugins: [mylab.defenses]
    defenses:
      - name: my-defense

The spec imports its plugins as it loads, in every process that loads it (bench workers included), so a
component defined in the user's own package runs through the bench, the report and the export as a
built-in one does. A bundle records the plugins its defense came from, but loading a bundle never
imports anything on its own: a server imports only the plugins its operator names
(``splitveil serve --plugin MODULE``), so a tampered bundle cannot make it import a module.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterable

from splitveil.errors import CheckpointError, ConfigError, SplitveilError

_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_MAX_NAME = 200  # a dotted module path; far longer is not one


def is_module_name(name: object) -> bool:
    """Whether ``name`` is a dotted Python module name of a sane length (what a plugin entry must be)."""
    return isinstance(name, str) and len(name) <= _MAX_NAME and bool(_MODULE_NAME.fullmatch(name))


def load_plugins(modules: Iterable[str]) -> None:
    """Import each module in ``modules`` (once per process); a ConfigError names one that cannot be."""
    for name in modules:
        if not is_module_name(name):
            raise ConfigError(
                f"plugin {name!r} is not a module name; give a dotted Python module such as mylab.defenses, "
                "not a file path"
            )
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(
                f"plugin {name!r} cannot be imported ({exc}); install its package, or put the directory "
                "holding it on PYTHONPATH"
            ) from None


def require_imported(modules: Iterable[str], *, where: str, error: type[SplitveilError] = CheckpointError) -> None:
    """Refuse (with ``error``) unless every plugin in ``modules``, which ``where`` (a bundle, a spec found
    in a run directory: files not trusted to import code) needs, has been imported by the caller."""
    missing = [name for name in modules if name not in sys.modules]
    if missing:
        flags = " ".join(f"--plugin {name}" for name in missing)
        raise error(
            f"{where} needs the plugin(s) {', '.join(missing)}, which are not imported, and it is not trusted to "
            f"import code by itself: import them first, or pass {flags} to trust them"
        )
