"""How deep a cut is, judged from the shapes alone: the feature's spatial downsampling.

Inversion gets harder with depth (He et al.: rMLE reaches 37.6 dB at conv11 but 13.4 dB at ReLU32
on CIFAR-10), and what changes most between those cuts is how much spatial resolution the edge
has pooled away. Depth is therefore read from ``factor = max(H / h, W / w)`` for a feature
``[C, h, w]`` of an input ``[C0, H, W]``:

* ``factor < 1.5``  -> ``"shallow"`` (no pooling yet: he-cnn's conv11 ... relu12),
* ``factor < 3``    -> ``"middle"`` (one 2x pooling: pool1 ... relu22),
* otherwise, or a feature that is not ``[C, h, w]`` (flattened, fully connected) -> ``"deep"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

Depth = Literal["shallow", "middle", "deep"]


def cut_depth(feature_shape: Sequence[int], input_shape: Sequence[int]) -> Depth:
    """The depth class of a cut whose per-sample feature has ``feature_shape``.

    Example:
        >>> cut_depth((16, 28, 28), (1, 28, 28)), cut_depth((32, 14, 14), (1, 28, 28))
        ('shallow', 'middle')
        >>> cut_depth((64, 7, 7), (1, 28, 28)), cut_depth((256,), (1, 28, 28))
        ('deep', 'deep')
    """
    if len(feature_shape) != 3:
        return "deep"
    _, height, width = input_shape
    _, h, w = feature_shape
    factor = max(height / h, width / w)
    if factor < 1.5:
        return "shallow"
    if factor < 3:
        return "middle"
    return "deep"
