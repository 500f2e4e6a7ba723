"""A split whose output is salted: the cloud computes logits over relabelled classes.

The split's ``forward`` is what the *client* experiences end to end: it draws a salt per sample,
runs the salted edge, lets the cloud compute salted logits, and decodes them with the salt. Its
output is therefore in the true class space, so the one training loop, ``evaluate`` and the bench
measure accuracy unchanged — and training on decoded logits is training on salted targets
(see :mod:`splitveil.salt.codes`). The cloud half is an ordinary module that takes ``z`` alone: it
has no input through which a salt could reach it.
"""

from __future__ import annotations

import torch
from torch import nn

from splitveil.salt.layer import SaltedEdge
from splitveil.split import SplitModel


class SaltedSplit(SplitModel):
    """``decode(cloud(edge(x, s)), s)`` with a fresh client-side salt ``s`` per sample."""

    edge: SaltedEdge

    def __init__(self, edge: SaltedEdge, cloud: nn.Module, *, cut_name: str = "") -> None:
        super().__init__(edge, cloud, cut_name=cut_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[1]

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, decoded logits)`` for fresh salts: what crosses the wire, and what the client reads."""
        salt = self.edge.source.draw(len(x)).to(x.device)
        z, salted = self.salted_forward(x, salt)
        return z, self.edge.code.decode_logits(salted, salt)

    def salted_forward(self, x: torch.Tensor, salt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, salted logits)`` for the given salts: exactly what the cloud receives and computes."""
        z = self.edge(x, salt)
        return z, self.cloud(z)

    def decode(self, salted_logits: torch.Tensor, salt: torch.Tensor) -> torch.Tensor:
        """Client-side decoding of the cloud's answer to logits over the true classes."""
        return self.edge.code.decode_logits(salted_logits, self.edge.check_salt(salt, len(salted_logits)))
