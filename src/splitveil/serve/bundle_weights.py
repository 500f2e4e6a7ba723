"""A bundle half's weights, checked against the module built from its metadata before they are read.

The safetensors header lists every tensor's name, dtype and shape without its data, so a file that
does not fit the module is refused unread, and a file larger than the module's weights (plus room
for that header) is refused before a byte of it is loaded. Weights that hold NaN or infinity are
refused too: such a server would report ready and answer nothing but refusals.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from splitveil.checkpoint import WEIGHTS_FILE
from splitveil.errors import CheckpointError

#: Bytes a weights file may hold beyond its tensors' data: the header naming them (a few hundred
#: bytes a tensor).
HEADER_ALLOWANCE = 1 << 20
_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_FIX = "export the bundle again with `splitveil export`"


def load_bundle_weights(directory: Path, module: nn.Module) -> None:
    """Load ``directory``'s weights into ``module`` once they are known to fit it exactly and be finite."""
    path = directory / WEIGHTS_FILE
    expected = module.state_dict()
    data_bytes = sum(t.numel() * t.element_size() for t in expected.values())
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CheckpointError(f"no weights at {path}; {_FIX}") from None
    if size > data_bytes + HEADER_ALLOWANCE:
        raise CheckpointError(
            f"bundle file {path} is {size} bytes, but the model its meta.json describes has {data_bytes} "
            f"bytes of weights; {_FIX}"
        )
    _check_header(path, expected)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"bundle file {path} cannot be read ({_one_line(exc)}); {_FIX}") from None
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"bundle file {path}: tensor {name!r} holds NaN or infinite values; {_FIX}")
    module.load_state_dict(state)


def _check_header(path: Path, expected: dict[str, torch.Tensor]) -> None:
    """Refuse ``path`` unless its tensors have exactly ``expected``'s names, dtypes and shapes."""
    try:
        found = {}
        with safe_open(str(path), framework="pt") as weights:
            for name in weights.keys():
                tensor = weights.get_slice(name)  # the header's entry: no data is read
                found[name] = (tensor.get_dtype(), tuple(tensor.get_shape()))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"bundle file {path} is not a safetensors file ({_one_line(exc)}); {_FIX}") from None
    wanted = {name: (_SAFETENSORS_DTYPES.get(t.dtype, str(t.dtype)), tuple(t.shape)) for name, t in expected.items()}
    missing = sorted(set(wanted) - set(found))
    unexpected = sorted(set(found) - set(wanted))
    if missing or unexpected:
        if missing:
            problem = f"lacks tensor {missing[0]!r}, which the model in meta.json has"
        else:
            problem = f"has tensor {unexpected[0]!r}, which the model in meta.json does not"
        raise CheckpointError(f"bundle file {path} {problem}; {_FIX}")
    for name, (dtype, shape) in wanted.items():
        if found[name] != (dtype, shape):
            raise CheckpointError(
                f"bundle file {path}: tensor {name!r} is {found[name][0]} {list(found[name][1])}, but the model "
                f"in meta.json needs {dtype} {list(shape)}; {_FIX}"
            )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]
