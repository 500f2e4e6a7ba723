"""A ceiling on the tensor memory and the number of operations of a block of torch code.

A bundle's metadata says how to build its model (widths, a cut, a defense and its options), and a
tampered file can ask for a model of terabytes. Checking every option of every model and defense
by hand would go stale as they change; instead, the build runs under :class:`TensorBudget`, which
sees every tensor operation (a ``TorchDispatchMode``), works out the size of what it would allocate
by running it first on the "meta" device (shapes only, no memory), and refuses it before it runs
once the total would pass the budget. The operation count bounds the time a build can take.

Example:
    >>> import torch
    >>> with TensorBudget(max_bytes=1 << 20):
    ...     small = torch.zeros(1000)
    >>> try:
    ...     with TensorBudget(max_bytes=1 << 20):
    ...         huge = torch.zeros(1 << 40)
    ... except BudgetExceeded as exc:
    ...     print(exc)
    aten.zeros.default would take the tensors built to 4398046511104 bytes, more than the 1048576 allowed
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map


class BudgetExceeded(RuntimeError):
    """Code under a :class:`TensorBudget` asked for more memory or operations than it allows."""


class TensorBudget(TorchDispatchMode):
    """Refuse any tensor operation that would take the bytes allocated past ``max_bytes`` in total,
    or the operations past ``max_operations``; ``used_bytes`` is what was counted so far.

    Every operation's new outputs count (temporaries too: the total is an upper bound of what was
    alive at once); views and in-place operations allocate nothing and count nothing.
    """

    def __init__(self, *, max_bytes: int, max_operations: int = 1 << 20) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.max_operations = max_operations
        self.used_bytes = 0
        self.operations = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        self.operations += 1
        if self.operations > self.max_operations:
            raise BudgetExceeded(f"building took more than {self.max_operations} tensor operations")
        allocates = not any(result.alias_info is not None for result in func._schema.returns)
        size = _output_bytes(func, args, kwargs) if allocates else 0
        if size is not None and self.used_bytes + size > self.max_bytes:
            raise BudgetExceeded(
                f"{func} would take the tensors built to {self.used_bytes + size} bytes, "
                f"more than the {self.max_bytes} allowed"
            )
        result = func(*args, **kwargs)
        if size is None:  # the size depends on the values (nonzero, unique): counted once it is known
            size = _nbytes(result) if allocates else 0
            if self.used_bytes + size > self.max_bytes:
                raise BudgetExceeded(f"{func} took the tensors built past the {self.max_bytes} bytes allowed")
        self.used_bytes += size
        return result


def _output_bytes(func: Any, args: tuple, kwargs: dict) -> int | None:
    """The bytes ``func`` would allocate, found on the meta device; None when meta cannot tell."""
    meta_args, meta_kwargs = tree_map(_on_meta, (args, kwargs))
    if "device" in meta_kwargs:
        meta_kwargs["device"] = torch.device("meta")
    try:
        return _nbytes(func(*meta_args, **meta_kwargs))
    except Exception:  # no meta kernel, or a value-dependent result: no size is known in advance
        return None


def _on_meta(value: Any) -> Any:
    return value.to("meta") if isinstance(value, torch.Tensor) else value


def _nbytes(result: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tree_leaves(result) if isinstance(t, torch.Tensor))
