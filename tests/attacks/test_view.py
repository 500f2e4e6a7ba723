from __future__ import annotations

import pytest
import torch

from splitveil.attacks import Capability
from splitveil.errors import CapabilityError

from .conftest import tiny_split, view_of

ACCESSORS = {
    Capability.EDGE_WEIGHTS: lambda view: view.edge,
    Capability.EDGE_ARCHITECTURE: lambda view: view.edge_architecture,
    Capability.EDGE_QUERIES: lambda view: view.query(torch.zeros(1, 1, 12, 12)),
    Capability.CLOUD_MODEL: lambda view: view.cloud,
    Capability.AUX_DATA: lambda view: view.aux,
    Capability.TARGET_LABELS: lambda view: view.target_labels,
}


@pytest.mark.parametrize("capability", list(Capability), ids=lambda c: c.name)
def test_an_ungranted_accessor_raises_naming_the_capability(capability):
    view = view_of(tiny_split(), set(Capability) - {capability})
    with pytest.raises(CapabilityError, match=capability.value):
        ACCESSORS[capability](view)
    for other in set(Capability) - {capability}:
        ACCESSORS[other](view)  # the granted ones work


def test_queries_give_the_deployed_features_without_gradients():
    split = tiny_split()
    view = view_of(split, {Capability.EDGE_QUERIES})
    x = torch.rand(2, 1, 12, 12, requires_grad=True)
    z = view.query(x)
    assert torch.equal(z, split.edge(x).detach())
    assert not z.requires_grad
