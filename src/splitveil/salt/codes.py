"""Salt codes: how a secret salt ``s`` relabels the classes the cloud computes.

A code is a table ``T`` of shape ``(num_salts, K)``: the network is trained so that for an input of
class ``y`` salted with ``s`` the cloud's argmax is ``T[s, y]``. The client, who knows ``s``,
decodes; the cloud, who does not, sees a class index that says nothing by itself.

* :func:`shift_code` — Salted DNNs' cyclic shift ``T[s, y] = (y + s) mod K`` (Malekzadeh and
  Kawsar, HotMobile 2024) [code]. ``num_salts = K``: a larger salt would alias a smaller one.
* :func:`permutation_code` — [ours] a keyed, independent permutation of the K classes per salt,
  derived from a client secret. A shift keeps the *differences* between classes (the runner-up of a
  shirt is a T-shirt at every salt, one position away), so the shape of the logit vector can leak
  the label; an independent permutation per salt does not keep that structure. But independent rows
  do not send every class to every index equally often, so the argmax *alone* tells a cloud with
  labelled queries something: with K = 10 salts the best guess from it is right 22–28% of the time
  against 10% chance (keys 0–2).
* :func:`latin_code` — [ours] a keyed Latin square: each row a permutation, and over each block of
  K salts every class is sent to every index exactly once. Under a uniform salt the argmax is then
  independent of the label (the best guess from it is right exactly 1/K of the time), as for the
  shift. It is the shift under secret relabellings of the classes and of the indices, so it keeps
  the shift's fixed differences (``ρ[y'] − ρ[y]`` for every salt): it removes the argmax's leak and
  nothing else.

Training on salted targets needs no special loop: :meth:`SaltCode.decode_logits` maps the salted
logits back to the true classes (``decoded[:, y] = logits[:, T[s, y]]``), so the ordinary
cross-entropy of the decoded logits against ``y`` *is* the cross-entropy of the salted logits
against ``T[s, y]``.

Example:
    >>> import torch
    >>> code = shift_code(4)
    >>> code.encode_labels(torch.tensor([3, 1]), torch.tensor([1, 2]))
    tensor([0, 3])
    >>> code.decode_labels(torch.tensor([0, 3]), torch.tensor([1, 2]))
    tensor([3, 1])
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn


class SaltCode(nn.Module):
    """A salt → class-relabelling table ``T`` (``num_salts × K``), each row a permutation of ``range(K)``."""

    # Buffers, registered in __init__.
    table: torch.Tensor
    inverse: torch.Tensor

    def __init__(self, table: torch.Tensor, *, scheme: str) -> None:
        super().__init__()
        table = torch.as_tensor(table, dtype=torch.long)
        if table.dim() != 2 or table.shape[0] < 1 or table.shape[1] < 2:
            raise ValueError(f"a salt code table is (num_salts >= 1, K >= 2), got shape {tuple(table.shape)}")
        classes = torch.arange(table.shape[1])
        if not torch.equal(table.sort(dim=1).values, classes.expand_as(table)):
            raise ValueError("every row of a salt code table must be a permutation of range(K)")
        # Derived from the code's settings, so not saved with the weights: the table is the client's.
        self.register_buffer("table", table, persistent=False)
        self.register_buffer("inverse", table.argsort(dim=1), persistent=False)
        self.scheme = scheme

    @property
    def num_salts(self) -> int:
        return int(self.table.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.table.shape[1])

    def encode_labels(self, labels: torch.Tensor, salt: torch.Tensor) -> torch.Tensor:
        """The salted class ``T[s, y]`` the cloud is trained to output."""
        return self.table[salt, labels]

    def decode_labels(self, salted: torch.Tensor, salt: torch.Tensor) -> torch.Tensor:
        """The true class of a salted prediction: ``T[s]⁻¹(salted)``."""
        return self.inverse[salt, salted]

    def decode_logits(self, logits: torch.Tensor, salt: torch.Tensor) -> torch.Tensor:
        """Logits over the true classes: ``decoded[:, y] = logits[:, T[s, y]]`` (differentiable)."""
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"expected logits of shape (N, {self.num_classes}), got {tuple(logits.shape)}")
        return logits.gather(1, self.table[salt])

    def extra_repr(self) -> str:
        return f"scheme={self.scheme}, num_salts={self.num_salts}, num_classes={self.num_classes}"


def shift_code(num_classes: int) -> SaltCode:
    """Salted DNNs' cyclic shift: ``T[s, y] = (y + s) mod K`` for ``s`` in ``range(K)``."""
    salts = torch.arange(num_classes).unsqueeze(1)
    return SaltCode((salts + torch.arange(num_classes)) % num_classes, scheme="shift")


def permutation_code(num_classes: int, *, num_salts: int, key: int | str | bytes) -> SaltCode:
    """An independent permutation of the classes per salt, derived from the client secret ``key``.

    Row ``s`` is ``torch.randperm(K)`` under a generator seeded by SHA-256 of ``(key, s)``, so the
    table is reproducible from the key alone and rows are unrelated to each other.
    """
    if num_salts < 1:
        raise ValueError(f"num_salts must be >= 1, got {num_salts}")
    rows = [_keyed_permutation(num_classes, key, f"/salt/{salt}") for salt in range(num_salts)]
    return SaltCode(torch.stack(rows), scheme="permutation")


def latin_code(num_classes: int, *, num_salts: int, key: int | str | bytes) -> SaltCode:
    """A keyed Latin square per block of K salts: ``T[s, y] = τ[(ρ[y] + π[s]) mod K]``.

    ``ρ``, ``π`` and ``τ`` are permutations of ``range(K)`` drawn from SHA-256 of the key (fresh ones
    per block), so the table is reproducible from the key alone. For a fixed class ``y`` the K salts
    of a block reach K different indices, which is what makes the argmax alone uninformative.
    """
    if num_salts < 1 or num_salts % num_classes:
        raise ValueError(f"a Latin code needs num_salts to be a positive multiple of K={num_classes}, got {num_salts}")
    blocks = []
    for block in range(num_salts // num_classes):
        rho, pi, tau = (_keyed_permutation(num_classes, key, f"/latin/{block}/{part}") for part in "rpt")
        blocks.append(tau[(rho.unsqueeze(0) + pi.unsqueeze(1)) % num_classes])
    return SaltCode(torch.cat(blocks), scheme="latin")


def _keyed_permutation(size: int, key: int | str | bytes, label: str) -> torch.Tensor:
    """``torch.randperm(size)`` under a generator seeded by SHA-256 of ``key`` and ``label``."""
    secret = key if isinstance(key, bytes) else str(key).encode()
    digest = hashlib.sha256(secret + label.encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return torch.randperm(size, generator=generator)
