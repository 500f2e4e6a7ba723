from __future__ import annotations

import pytest
import torch
from torch import nn

from splitveil.defenses import FeatureDropout, create_defense
from splitveil.errors import ConfigError
from splitveil.split import SplitModel


def test_zero_fraction_matches_p_in_eval_mode() -> None:
    torch.manual_seed(0)
    dropped = FeatureDropout(0.3).eval()(torch.ones(200_000))
    assert (dropped == 0).float().mean().item() == pytest.approx(0.3, abs=0.01)


def test_kept_values_are_not_rescaled_by_default() -> None:
    torch.manual_seed(0)
    z = torch.rand(1000) + 1
    out = FeatureDropout(0.5)(z)
    kept = out != 0
    assert torch.equal(out[kept], z[kept])


def test_rescale_is_inverted_dropout() -> None:
    torch.manual_seed(0)
    z = torch.rand(1000) + 1
    out = FeatureDropout(0.5, rescale=True)(z)
    kept = out != 0
    assert torch.allclose(out[kept], z[kept] / 0.5)
    torch.manual_seed(1)
    assert FeatureDropout(0.5, rescale=True)(torch.ones(100_000)).mean().item() == pytest.approx(1.0, abs=0.02)


def test_p_zero_is_the_identity() -> None:
    z = torch.rand(10)
    state = torch.get_rng_state()
    assert FeatureDropout(0.0, rescale=True)(z) is z
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("p", [1.0, 1.5, -0.1])
def test_p_must_be_a_probability_below_one(p: float) -> None:
    with pytest.raises(ValueError):
        FeatureDropout(p)
    with pytest.raises(ConfigError, match="strength"):
        create_defense("feature-dropout", strength=p)


def test_the_defense_drops_the_transmitted_feature_in_eval_mode() -> None:
    split = create_defense("feature-dropout", strength=0.5).apply(SplitModel(nn.Identity(), nn.Identity())).eval()
    torch.manual_seed(0)
    z = split.edge(torch.ones(2, 4, 8, 8))
    assert 0.3 < (z == 0).float().mean().item() < 0.7
