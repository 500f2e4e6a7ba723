"""The salted layer: the secret salt enters the edge as extra feature maps (Salted DNNs).

Malekzadeh and Kawsar map the salt with a transposed convolution to a few feature maps that are
concatenated to the activations of a "salted layer" on the edge (an FC variant appends a salt-coded
vector) [code]. Here:

* :class:`SaltMaps` — the salt as a one-hot plane at ``1/tile`` of the activation's resolution goes
  through a stride-``tile`` transposed convolution to ``channels`` maps, cropped to the activation's
  size. Its weights do not depend on the resolution, so the layer needs no example input to build.
* :class:`SaltVector` — for flat activations, a linear map of the one-hot salt to ``channels`` values.
* :class:`SaltedEdge` — ``before`` (the edge up to the salted layer), the salt maps concatenated on
  the channel axis, ``after`` (the rest of the edge, whose first convolution or linear layer is
  widened to take the extra channels). The salt must meet at least one such layer *on the edge*:
  salt concatenated at the cut would cross the network in the clear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from splitveil.salt.codes import SaltCode
from splitveil.salt.sources import SaltSource


def _unit_scale(layer: nn.ConvTranspose2d | nn.Linear, scale: float) -> None:
    # [ours] A one-hot input picks one kernel per salt, so the maps' values are the weights
    # themselves; PyTorch's default (fan-in) initialisation makes them ~0.04, drowned by activations
    # of order 0.1-1, and training from scratch then plateaus at chance for epochs (measured on
    # Fashion-MNIST: 11% against 32% after six epochs with std 0.7 for the cyclic shift).
    nn.init.normal_(layer.weight, std=scale)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class SaltMaps(nn.Module):
    """Salt → ``channels`` feature maps of the activation's size, by a transposed convolution.

    ``scale`` is the initial std of the maps (the kernels): the salt must be heard from the start.
    """

    def __init__(self, *, num_salts: int, channels: int, tile: int = 4, scale: float = 1.0) -> None:
        super().__init__()
        if channels < 1 or tile < 1:
            raise ValueError(f"SaltMaps needs channels >= 1 and tile >= 1, got {channels} and {tile}")
        self.num_salts = num_salts
        self.tile = tile
        self.expand = nn.ConvTranspose2d(num_salts, channels, kernel_size=tile, stride=tile)
        _unit_scale(self.expand, scale)

    def forward(self, salt: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
        height, width = activation.shape[-2:]
        # Ceiling division written without negative operands: ONNX's integer Div truncates toward zero,
        # so the usual -(-h // t) exports as a floor and the maps come out a tile short.
        rows, cols = (height + self.tile - 1) // self.tile, (width + self.tile - 1) // self.tile
        plane = F.one_hot(salt, self.num_salts).to(activation.dtype)[:, :, None, None].expand(-1, -1, rows, cols)
        return self.expand(plane)[:, :, :height, :width]


class SaltVector(nn.Module):
    """Salt → ``channels`` values appended to a flat activation."""

    def __init__(self, *, num_salts: int, channels: int, scale: float = 1.0) -> None:
        super().__init__()
        self.num_salts = num_salts
        self.embed = nn.Linear(num_salts, channels)
        _unit_scale(self.embed, scale)

    def forward(self, salt: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
        return self.embed(F.one_hot(salt, self.num_salts).to(activation.dtype))


class SaltedEdge(nn.Module):
    """``after(cat[before(x), maps(salt)])``: the edge with the client's salt mixed in.

    ``forward(x, salt)`` uses the given salts (one per sample); ``forward(x)`` draws them from
    ``source``, as a device does for every query — which is what an attacker querying it sees.
    """

    def __init__(
        self,
        *,
        before: nn.Module,
        maps: SaltMaps | SaltVector,
        after: nn.Module,
        code: SaltCode,
        source: SaltSource,
        salt_at: str,
    ) -> None:
        super().__init__()
        if source.num_salts != code.num_salts:
            raise ValueError(f"the salt source draws {source.num_salts} salts but the code has {code.num_salts}")
        self.before = before
        self.maps = maps
        self.after = after
        self.code = code
        self.source = source
        self.salt_at = salt_at

    def forward(self, x: torch.Tensor, salt: torch.Tensor | None = None) -> torch.Tensor:
        if salt is None:
            salt = self.source.draw(len(x)).to(x.device)
        salt = self.check_salt(salt, len(x))
        activation = self.before(x)
        return self.after(torch.cat([activation, self.maps(salt, activation)], dim=1))

    # The client-side hooks (splitveil.client_side.SecretKeepingEdge): the salt is the device's secret.
    @property
    def num_secrets(self) -> int:
        return self.code.num_salts

    @property
    def secret_source(self) -> SaltSource:
        return self.source

    @property
    def answer_classes(self) -> int:
        return self.code.num_classes

    def decode_answer(self, answer: torch.Tensor, secret: torch.Tensor) -> torch.Tensor:
        """The cloud's salted logits decoded with the salts the queries were made with."""
        return self.code.decode_logits(answer, self.check_salt(secret, len(answer)))

    def check_salt(self, salt: torch.Tensor, count: int) -> torch.Tensor:
        """``salt`` as a long tensor of ``count`` values in ``range(num_salts)``, or a clear ValueError."""
        salt = torch.as_tensor(salt)
        if salt.shape != (count,) or salt.dtype.is_floating_point:
            raise ValueError(f"expected {count} integer salts (one per sample), got shape {tuple(salt.shape)}")
        if count and (int(salt.min()) < 0 or int(salt.max()) >= self.code.num_salts):
            raise ValueError(f"salts must lie in [0, {self.code.num_salts}), got {salt.min()}..{salt.max()}")
        return salt.long()
