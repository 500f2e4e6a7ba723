"""Where salts come from. A salt is drawn on the client for every query and never leaves it.

* :class:`TorchSalts` — from torch's global generator, like the noise defenses: reproducible where
  randomness is seeded (the training loop, the audit). For training and measuring, not deployment.
* :class:`SecretSalts` — from the operating system's CSPRNG (:mod:`secrets`), a fresh secret per
  query: what a deployed client uses.
* :class:`KeyedSalts` — ``HMAC-SHA256(secret, counter) mod num_salts``: a deterministic stream from a
  client secret, so a client can recompute the salt of its n-th query (e.g. to decode a logged
  answer later). The 64-bit value's modulo bias is below 2⁻⁵⁰ for any practical ``num_salts``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class SaltSource(Protocol):
    """Draws ``count`` salts in ``range(num_salts)`` as a long tensor."""

    num_salts: int

    def draw(self, count: int) -> torch.Tensor: ...


def _check(num_salts: int) -> int:
    if isinstance(num_salts, bool) or not isinstance(num_salts, int) or num_salts < 1:
        raise ValueError(f"num_salts must be a positive integer, got {num_salts!r}")
    return num_salts


class TorchSalts:
    """Uniform salts from torch's global generator (seeded by the loop and the audit)."""

    def __init__(self, num_salts: int) -> None:
        self.num_salts = _check(num_salts)

    def draw(self, count: int) -> torch.Tensor:
        return torch.randint(self.num_salts, (count,))


class SecretSalts:
    """Uniform salts from the OS's cryptographic generator: unpredictable, a fresh one per query."""

    def __init__(self, num_salts: int) -> None:
        self.num_salts = _check(num_salts)

    def draw(self, count: int) -> torch.Tensor:
        return torch.tensor([secrets.randbelow(self.num_salts) for _ in range(count)], dtype=torch.long)


class KeyedSalts:
    """The salt of query ``n`` is ``HMAC-SHA256(secret, n) mod num_salts``; ``counter`` is the next ``n``."""

    def __init__(self, num_salts: int, *, secret: bytes | str, counter: int = 0) -> None:
        self.num_salts = _check(num_salts)
        self._secret = secret.encode() if isinstance(secret, str) else bytes(secret)
        if not self._secret:
            raise ValueError("KeyedSalts needs a non-empty secret")
        self.counter = counter

    def salt_of(self, query: int) -> int:
        """The salt of query number ``query`` (no state changes)."""
        digest = hmac.new(self._secret, query.to_bytes(8, "little"), hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "little") % self.num_salts

    def draw(self, count: int) -> torch.Tensor:
        salts = [self.salt_of(self.counter + i) for i in range(count)]
        self.counter += count
        return torch.tensor(salts, dtype=torch.long)
