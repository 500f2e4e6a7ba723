from __future__ import annotations

import math

import pytest
import torch

from splitveil.defenses import NoPeekDefense, create_defense, distance_correlation
from splitveil.train import Batch, fit

from .conftest import RecordLosses, images, tiny_config, tiny_split


def brute_force_dcor(x: torch.Tensor, z: torch.Tensor) -> float:
    """Székely et al.'s V-statistic, written out with loops over every pair."""
    n = len(x)
    xs, zs = x.reshape(n, -1).tolist(), z.reshape(n, -1).tolist()

    def centred(rows: list[list[float]]) -> list[list[float]]:
        d = [[math.dist(rows[i], rows[j]) for j in range(n)] for i in range(n)]
        row = [sum(d[i]) / n for i in range(n)]
        col = [sum(d[i][j] for i in range(n)) / n for j in range(n)]
        grand = sum(row) / n
        return [[d[i][j] - row[i] - col[j] + grand for j in range(n)] for i in range(n)]

    def dcov2(a: list[list[float]], b: list[list[float]]) -> float:
        return sum(a[i][j] * b[i][j] for i in range(n) for j in range(n)) / n**2

    a, b = centred(xs), centred(zs)
    return math.sqrt(dcov2(a, b) / math.sqrt(dcov2(a, a) * dcov2(b, b)))


def sample(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_brute_force_reference(seed: int) -> None:
    x = sample(12, 1, 3, 3, seed=seed)
    z = torch.tanh(x.flatten(1)[:, :4] * 2) + 0.5 * sample(12, 4, seed=seed + 10)  # dependent, non-linearly
    assert distance_correlation(x, z).item() == pytest.approx(brute_force_dcor(x, z), abs=1e-5)
    independent = sample(12, 7, seed=seed + 20)
    assert distance_correlation(x, independent).item() == pytest.approx(brute_force_dcor(x, independent), abs=1e-5)


def test_dcor_of_x_with_itself_is_one() -> None:
    x = sample(20, 5, seed=0)
    assert distance_correlation(x, x).item() == pytest.approx(1.0, abs=1e-9)


def test_independent_large_samples_have_small_dcor() -> None:
    x, z = sample(600, 3, seed=0), sample(600, 3, seed=1)
    assert distance_correlation(x, z).item() < 0.2
    assert distance_correlation(x, z).item() < distance_correlation(x[:100], z[:100]).item()  # bias shrinks with n


def test_invariant_to_scaling_and_translation() -> None:
    x, z = sample(16, 6, seed=0), sample(16, 3, seed=1) + sample(16, 6, seed=0)[:, :3]
    reference = distance_correlation(x, z)
    assert distance_correlation(3.5 * x - 2.0, z).item() == pytest.approx(reference.item(), abs=1e-10)
    assert distance_correlation(x, 0.01 * z + 7.0).item() == pytest.approx(reference.item(), abs=1e-10)


def test_a_linear_map_gives_high_dcor() -> None:
    x = sample(64, 20, seed=0)
    assert distance_correlation(x, x @ sample(20, 20, seed=1).T).item() > 0.85


def test_is_in_the_unit_interval_and_symmetric() -> None:
    x, z = sample(10, 4, seed=0), sample(10, 2, seed=1)
    value = distance_correlation(x, z).item()
    assert 0 <= value <= 1
    assert distance_correlation(z, x).item() == pytest.approx(value, abs=1e-12)


def test_gradient_matches_finite_differences() -> None:
    x = sample(6, 3, seed=0)
    z = (x[:, :2] + 0.3 * sample(6, 2, seed=1)).requires_grad_()
    assert torch.autograd.gradcheck(lambda feature: distance_correlation(x, feature), (z,))


def test_constant_features_give_zero_not_nan_gradients() -> None:
    x = torch.rand(8, 1, 4, 4)
    z = torch.zeros(8, 5, requires_grad=True)
    value = distance_correlation(x, z)
    value.backward()
    assert value.item() < 1e-5
    assert torch.isfinite(z.grad).all()


def test_a_gradient_step_on_z_lowers_dcor() -> None:
    x = images(16).double()
    z = (x.flatten(1)[:, :10] * 2).requires_grad_()
    value = distance_correlation(x, z)
    value.backward()
    assert distance_correlation(x, z.detach() - 0.5 * z.grad).item() < value.item()


def test_the_loss_term_is_strength_times_dcor() -> None:
    defense = NoPeekDefense(strength=2.0)
    x = images(8)
    z, logits = tiny_split().forward_with_features(x)
    terms = defense.loss_terms(Batch(x, torch.zeros(8, dtype=torch.int64)), z, logits)
    assert terms.keys() == {"nopeek"}
    assert torch.allclose(terms["nopeek"], 2.0 * distance_correlation(x, z))
    assert defense.requires_training and defense.apply(split := tiny_split()) is split


def test_needs_the_transmitted_feature() -> None:
    x = images(4)
    with pytest.raises(ValueError, match="SplitModel"):
        NoPeekDefense(strength=1.0).loss_terms(Batch(x, torch.zeros(4, dtype=torch.int64)), None, torch.zeros(4, 3))


def test_trains_with_the_loop_and_logs_its_term(tiny_data) -> None:
    defense = create_defense("nopeek", strength=1.0)
    recorder = RecordLosses()
    result = fit(
        defense.apply(tiny_split()),
        tiny_data,
        tiny_config(),
        seed=0,
        loss_terms=[defense.loss_terms],
        hooks=[*defense.hooks(), recorder],
        progress=False,
    )
    assert recorder.names and all(names == {"task", "nopeek"} for names in recorder.names)
    assert math.isfinite(result.history[0].train_loss)
