import math

import pytest
import torch

from splitveil.metrics import MINE, MIEstimate, estimate_mi
from splitveil.metrics.mine import donsker_varadhan

# Settings for a handful of dimensions (see estimate_mi's docstring): ~1 s per estimate.
LOW_DIM = {"steps": 500, "batch_size": 512, "lr": 3e-3, "hidden": 64}


def _correlated_gaussians(n: int, d: int, rho: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, rho * x + math.sqrt(1 - rho**2) * torch.randn(n, d, generator=g)


@pytest.mark.parametrize(("d", "rho"), [(2, 0.9), (3, 0.8)])
def test_estimate_is_within_ten_percent_of_the_closed_form(d, rho):
    x, z = _correlated_gaussians(4000, d, rho, seed=1)
    truth = -d / 2 * math.log(1 - rho**2)
    estimate = estimate_mi(x, z, seed=0, **LOW_DIM)
    assert estimate.nats == pytest.approx(truth, rel=0.10)
    assert estimate.eval_samples == 800 and (estimate.x_dim, estimate.z_dim) == (d, d)
    assert len(estimate.history) == LOW_DIM["steps"]


def test_independent_variables_have_near_zero_mi():
    g = torch.Generator().manual_seed(2)
    x, z = torch.randn(4000, 3, generator=g), torch.randn(4000, 3, generator=g)
    estimate = estimate_mi(x, z, seed=0, **{**LOW_DIM, "steps": 300})
    assert abs(estimate.nats) < 0.05


def test_an_invertible_map_carries_more_information_than_a_noisy_one():
    x = torch.randn(2000, 3, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    settings = {**LOW_DIM, "steps": 300}
    bijection = estimate_mi(x, 2 * x + 1, seed=0, **settings)
    noisy = estimate_mi(x, 2 * x + 1 + noise, seed=0, **settings)
    assert bijection.nats > 3.0  # the true MI of a continuous bijection is infinite
    assert bijection.nats > noisy.nats + 1.0


def test_estimate_is_deterministic_for_a_seed_and_leaves_the_global_rng_alone():
    x, z = _correlated_gaussians(600, 2, 0.8, seed=5)
    settings = {**LOW_DIM, "steps": 50}
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = estimate_mi(x, z, seed=7, **settings)
    assert torch.equal(torch.rand(1), expected_next)
    assert estimate_mi(x, z, seed=7, **settings) == first
    assert estimate_mi(x, z, seed=8, **settings).history != first.history


def test_wide_inputs_are_projected_to_max_dim():
    g = torch.Generator().manual_seed(6)
    x = torch.rand(200, 1, 12, 12, generator=g)
    z = torch.rand(200, 4, 6, 6, generator=g)
    settings = {"steps": 5, "hidden": 16}
    projected = estimate_mi(x, z, max_dim=32, **settings)
    assert (projected.x_dim, projected.z_dim) == (32, 32)
    full = estimate_mi(x, z, max_dim=None, **settings)
    assert (full.x_dim, full.z_dim) == (144, 144)
    narrow = estimate_mi(x[:, :, :4, :4], z, max_dim=32, **settings)
    assert narrow.x_dim == 16  # already narrower than max_dim: left as it is


def test_bits_are_nats_over_ln_2():
    estimate = MIEstimate(nats=math.log(2) * 3, train_nats=0.0, history=(), eval_samples=2, x_dim=1, z_dim=1)
    assert estimate.bits == pytest.approx(3.0)


def test_invalid_inputs_are_rejected():
    x = torch.randn(100, 2)
    with pytest.raises(ValueError, match="same number of rows"):
        estimate_mi(x, torch.randn(99, 2))
    with pytest.raises(ValueError, match="too few"):
        estimate_mi(x[:4], x[:4])
    with pytest.raises(ValueError, match="holdout"):
        estimate_mi(x, x, holdout=1.0)
    with pytest.raises(ValueError, match="finite"):
        estimate_mi(x, torch.full((100, 2), float("nan")))
    with pytest.raises(ValueError, match="ema_rate"):
        MINE(2, 2, ema_rate=0.0)


def test_donsker_varadhan_bound_of_a_known_statistic():
    t_joint = torch.tensor([2.0, 4.0])
    t_marginal = torch.tensor([0.0, math.log(3.0)])  # mean(exp) = 2
    assert float(donsker_varadhan(t_joint, t_marginal)) == pytest.approx(3.0 - math.log(2.0))


def test_moving_average_starts_at_the_first_batch_and_then_moves_by_ema_rate():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        mine = MINE(2, 2, hidden=8, ema_rate=0.25)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 2, generator=g), torch.randn(16, 2, generator=g)) for _ in range(2)]

    def log_mean_exp_marginal(x, z):
        t = mine(x, z.roll(1, dims=0)).detach()
        return float(torch.logsumexp(t, 0) - math.log(len(t)))

    first = log_mean_exp_marginal(*batches[0])
    joint_mean = float(mine(*batches[0]).detach().mean())
    loss, bound = mine.training_loss(*batches[0])
    assert float(mine.log_ema) == pytest.approx(first, abs=1e-6)
    # With the average equal to the batch's own mean, the loss's value is 1 - mean(T_joint).
    assert float(loss.detach()) == pytest.approx(1.0 - joint_mean, abs=1e-5)
    assert float(bound) == pytest.approx(joint_mean - first, abs=1e-5)
    second = log_mean_exp_marginal(*batches[1])
    mine.training_loss(*batches[1])
    expected = math.log(0.75 * math.exp(first) + 0.25 * math.exp(second))
    assert float(mine.log_ema) == pytest.approx(expected, abs=1e-5)
