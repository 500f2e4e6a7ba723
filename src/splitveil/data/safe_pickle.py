"""Load pickles that may only contain plain containers and numpy arrays.

CIFAR-10's "python version" is a set of pickles, and unpickling an untrusted file can run any
code it names. :class:`NumpyOnlyUnpickler` resolves only the handful of globals numpy needs to
rebuild arrays; anything else (``os.system``, ``builtins.eval``, ...) is refused before it can
be called.
"""

from __future__ import annotations

import _codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]  # same module, numpy 1.x path
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]  # same module, numpy 1.x path

from splitveil.errors import ConfigError

# (module, name) as written in the pickle -> the object it may resolve to. Old numpy wrote
# ``numpy.core``; numpy 2 writes ``numpy._core``. Both map to the same functions directly, so we
# never import a module named by the file.
_frombuffer: Any = _numeric._frombuffer  # type: ignore[attr-defined]  # private numpy helper, absent from its stubs
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs.encode,  # how Python 3 writes bytes at protocol < 3
}


class UnsafePickleError(ConfigError):
    """A pickle referenced something other than numpy array reconstruction."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler whose only reachable globals are :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle {module}.{name}: only numpy arrays and plain containers are allowed"
            ) from None


def load_numpy_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` with :class:`NumpyOnlyUnpickler`.

    ``encoding="bytes"`` keeps Python 2 ``str`` values (as in the real CIFAR files) as bytes
    instead of guessing a text encoding for raw pixel buffers.
    """
    path = Path(path)
    with path.open("rb") as handle:
        try:
            return NumpyOnlyUnpickler(handle, encoding="bytes").load()
        except UnsafePickleError as err:
            raise UnsafePickleError(f"{path}: {err}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
            raise ConfigError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from None
