"""The client-side hooks: every edge is run, encoded and decoded the same way, whatever its defense."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from splitveil.client_side import DeviceSide, SecretKeepingEdge
from splitveil.defenses import create_defense
from splitveil.salt.sources import SecretSalts, TorchSalts

from .conftest import images, tiny_split


class AddSecret(nn.Module):
    """A toy defense's edge, defined here and nowhere in splitveil: adds its secret, and the answer is
    shifted by it, so only a device that kept the secret reads the answer."""

    def __init__(self, count: int = 5) -> None:
        super().__init__()
        self.count = count
        self.source = TorchSalts(count)

    @property
    def num_secrets(self) -> int:
        return self.count

    @property
    def secret_source(self) -> TorchSalts:
        return self.source

    @property
    def answer_classes(self) -> int:
        return 3

    def forward(self, x: torch.Tensor, secret: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :3] + secret[:, None].float()

    def decode_answer(self, answer: torch.Tensor, secret: torch.Tensor) -> torch.Tensor:
        return answer - secret[:, None].float()


def test_an_edge_that_keeps_no_secret_is_run_as_it_is_and_its_answer_read_as_it_comes() -> None:
    split = tiny_split().eval()
    device = DeviceSide(split.edge)
    x = images(4)
    z, secret = device.encode(x)
    assert secret is None and torch.equal(z, split.edge(x))
    answer = split.cloud(z)
    assert device.decode(answer, secret) is answer
    assert device.num_secrets is None and device.num_classes is None


def test_a_secret_source_for_an_edge_that_keeps_no_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="keeps no secret"):
        DeviceSide(tiny_split().edge, TorchSalts(4))


def test_an_edge_defined_outside_splitveil_gets_the_same_hooks() -> None:
    edge = AddSecret()
    assert isinstance(edge, SecretKeepingEdge)
    x = images(6)
    torch.manual_seed(0)
    z, secret = DeviceSide(edge).encode(x)
    assert secret is not None and secret.shape == (6,) and int(secret.max()) < 5
    assert torch.equal(z, x.flatten(1)[:, :3] + secret[:, None])
    assert torch.allclose(DeviceSide(edge).decode(z, secret), x.flatten(1)[:, :3])


def test_a_device_draws_from_the_csprng_and_an_audit_from_the_edge_s_seeded_source() -> None:
    edge = AddSecret()
    assert isinstance(DeviceSide(edge, secure=True).secrets, SecretSalts)
    assert DeviceSide(edge).secrets is edge.source
    given = TorchSalts(5)
    assert DeviceSide(edge, given, secure=True).secrets is given


def test_a_salted_edge_decodes_through_the_hooks_as_its_split_does() -> None:
    split = create_defense("salted", strength=0.5, salt_at="relu11").apply(tiny_split()).eval()
    assert isinstance(split.edge, SecretKeepingEdge)
    device = DeviceSide(split.edge)
    assert device.num_secrets == split.edge.code.num_salts
    assert device.num_classes == split.edge.code.num_classes
    x = images(8)
    with torch.no_grad():
        z, salt = device.encode(x)
        assert salt is not None
        expected = split.decode(split.cloud(split.edge(x, salt)), salt)
        assert torch.allclose(device.decode(split.cloud(z), salt), expected)
