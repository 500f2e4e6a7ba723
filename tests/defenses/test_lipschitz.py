"""The Lipschitz estimators against linear maps whose constants are known exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from splitveil.defenses.lipschitz import blockwise_lipschitz, local_lipschitz

from .conftest import same_state, snapshot


def linear_map(spectral_norm: float, *, rows: int = 12, cols: int = 20, seed: int = 0) -> torch.Tensor:
    """A random ``rows × cols`` matrix with singular values ``spectral_norm · (1, 0.6, 0.5, …)``."""
    generator = torch.Generator().manual_seed(seed)
    u, _, vh = torch.linalg.svd(torch.randn(rows, cols, generator=generator), full_matrices=False)
    spectrum = torch.linspace(0.6, 0.05, len(vh))
    spectrum[0] = 1.0  # a clear gap, so a few power iterations find the top direction
    return u @ torch.diag(spectral_norm * spectrum) @ vh


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factor * x


class Offset(nn.Module):
    def __init__(self, offset: float) -> None:
        super().__init__()
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.offset


@pytest.mark.parametrize("spectral_norm", [0.3, 2.5])
def test_power_iteration_finds_the_spectral_norm_of_a_linear_map(spectral_norm: float) -> None:
    a = linear_map(spectral_norm)
    assert torch.linalg.matrix_norm(a, ord=2).item() == pytest.approx(spectral_norm, rel=1e-5)
    x = torch.rand(6, 20, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    estimate = local_lipschitz(lambda v: v @ a.T, x, perturbation=0.05, power_iterations=10, generator=generator)
    assert estimate.item() == pytest.approx(spectral_norm, rel=0.1)


@pytest.mark.parametrize("seed", range(3))
def test_gaussian_perturbations_never_exceed_the_spectral_norm(seed: int) -> None:
    a = linear_map(2.0, seed=seed)
    x = torch.rand(16, 20)
    generator = torch.Generator().manual_seed(seed)
    ratios = local_lipschitz(lambda v: v @ a.T, x, perturbation=0.1, samples=3, generator=generator, reduction="none")
    assert ratios.shape == (16,)
    assert (ratios > 0).all() and (ratios <= 2.0 * (1 + 1e-5)).all()
    # ... and they sit well below it: a random direction gets the mean gain, not the top one.
    assert ratios.mean() < 0.8 * 2.0


def test_the_estimate_is_differentiable_in_the_parameters() -> None:
    layer = nn.Linear(20, 12)
    x = torch.rand(4, 20)
    local_lipschitz(layer, x, perturbation=0.05, power_iterations=3).backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_blockwise_ratios_of_scalings_are_their_factors() -> None:
    chain = nn.Sequential(Scale(2.0), nn.Identity(), Scale(0.5), Scale(3.0))
    blocks = [chain[0], chain[2], chain[3]]
    k = blockwise_lipschitz(chain, blocks, torch.rand(5, 1, 4, 4), perturbation=0.1)
    assert torch.allclose(k, torch.tensor([2.0, 0.5, 3.0]))


def _ratio_pair(model: nn.Module, blocks: list[nn.Module], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute and relative block ratios of ``model`` under the same perturbation."""

    def ratios(relative: bool) -> torch.Tensor:
        generator = torch.Generator().manual_seed(3)
        return blockwise_lipschitz(model, blocks, x, perturbation=0.05, generator=generator, relative=relative).detach()

    return ratios(False), ratios(True)


def test_relative_ratios_ignore_a_blocks_scale_and_offset_where_absolute_ones_follow_its_scale() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), Scale(1.0), Offset(0.0))
    blocks, x = [model[1], model[5]], torch.rand(6, 1, 8, 8)
    absolute, relative = _ratio_pair(model, blocks, x)
    model[4].factor, model[5].offset = 0.01, 3.0  # the last block's output shrinks a hundredfold, on a constant
    shrunk_absolute, shrunk_relative = _ratio_pair(model, blocks, x)
    assert torch.allclose(shrunk_relative, relative, rtol=1e-4)
    assert torch.allclose(shrunk_absolute, absolute * torch.tensor([1.0, 0.01]), rtol=1e-4)


def test_relative_ratios_of_a_homogeneous_chain_ignore_how_its_first_block_is_scaled() -> None:
    torch.manual_seed(0)  # no biases: every block is positively homogeneous, so a scale passes through
    model = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.ReLU(), nn.Conv2d(4, 4, 3, bias=False), nn.ReLU())
    blocks, x = [model[1], model[3]], torch.rand(6, 1, 8, 8)
    absolute, relative = _ratio_pair(model, blocks, x)
    with torch.no_grad():
        model[0].weight.mul_(0.01)
    shrunk_absolute, shrunk_relative = _ratio_pair(model, blocks, x)
    assert torch.allclose(shrunk_relative, relative, rtol=1e-4)
    assert torch.allclose(shrunk_absolute, absolute * torch.tensor([0.01, 1.0]), rtol=1e-4)


def test_blockwise_pass_leaves_running_statistics_alone_and_is_differentiable() -> None:
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 3)).train()
    before = snapshot(model)
    k = blockwise_lipschitz(model, [model[1], model[3]], torch.rand(4, 1, 8, 8), perturbation=0.05)
    assert same_state(model, before)
    k.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_blocks_that_do_not_run_are_an_error() -> None:
    model = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="did not run"):
        blockwise_lipschitz(model, [nn.Linear(3, 3)], torch.rand(2, 3), perturbation=0.1)


@pytest.mark.parametrize(
    "options",
    [{"perturbation": 0.0}, {"perturbation": 0.1, "samples": 0}, {"perturbation": 0.1, "power_iterations": -1}],
)
def test_invalid_settings_are_value_errors(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="local_lipschitz"):
        local_lipschitz(nn.Identity(), torch.rand(2, 3), **options)
