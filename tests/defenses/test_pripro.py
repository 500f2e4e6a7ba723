"""PriPro: the attention-shaped noise on z, its budget and adversarial terms, and training."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from splitveil.defenses import AttentionNoise, GaussianNoise, PriProDefense, create_defense
from splitveil.errors import ConfigError
from splitveil.train import Batch, fit

from .conftest import NUM_CLASSES, RecordLosses, images, same_state, snapshot, tiny_config, tiny_split

WIDTH = 8  # a tiny inverter keeps these tests fast


def batch_of(x: torch.Tensor) -> Batch:
    return Batch(x, torch.arange(len(x)) % NUM_CLASSES)


def shaped(noise: AttentionNoise, *, seed: int = 0) -> AttentionNoise:
    """Give the output conv random weights, so σ depends on z (it starts constant)."""
    with torch.no_grad():
        noise.to_sigma.weight.copy_(
            torch.randn(noise.to_sigma.weight.shape, generator=torch.Generator().manual_seed(seed))
        )
    return noise


def test_at_initialisation_the_noise_is_gaussian_noise_of_strength_times_budget() -> None:
    split = tiny_split().eval()
    defended = PriProDefense(strength=0.5, budget=0.8).apply(split)
    x = images(4)
    torch.manual_seed(1)
    sent = defended.edge(x)
    torch.manual_seed(1)
    reference = GaussianNoise(0.5 * 0.8)(split.edge(x))
    assert torch.allclose(sent, reference, atol=1e-6)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_noise_is_active_in_both_modes_with_the_configured_std(mode: str) -> None:
    split = tiny_split().train(mode == "train")
    defended = PriProDefense(strength=0.3).apply(split)
    x = images(64)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clean, first, second = split.edge(x), defended.edge(x), defended.edge(x)
    assert not torch.equal(first, second)  # a fresh draw on every inference, as deployed
    noise = first - clean
    assert noise.std().item() == pytest.approx(0.3, rel=0.05) and abs(noise.mean().item()) < 0.02


def test_zero_strength_is_the_identity_without_terms_or_inverter() -> None:
    split = tiny_split()
    defense = PriProDefense(strength=0.0)
    assert defense.apply(split) is split and defense.noise_module() is None
    x = images(8)
    terms = defense.loss_terms(batch_of(x), *split.forward_with_features(x))
    assert terms.keys() == {"adversarial", "noise_budget"} and all(v.item() == 0.0 for v in terms.values())
    assert defense.hooks() == []


def test_a_zero_scale_module_returns_its_input_and_draws_nothing() -> None:
    z, module = torch.rand(2, 8, 3, 3), AttentionNoise(8, scale=0.0)
    state = torch.get_rng_state()
    assert module(z) is z and torch.equal(torch.get_rng_state(), state)


def test_sigma_is_non_negative_per_element_and_attends_across_positions() -> None:
    noise = shaped(AttentionNoise(8, scale=1.0))
    z = torch.rand(3, 8, 4, 4)
    sigma = noise.sigma(z)
    assert sigma.shape == z.shape and (sigma >= 0).all()
    assert not torch.allclose(sigma[0], sigma[1])  # shaped by each sample's feature
    # Self-attention: changing z at one position changes σ at the others too (a 1x1 map would not).
    moved = z.clone()
    moved[:, :, 0, 0] += 5.0
    assert not torch.allclose(noise.sigma(moved)[:, :, 3, 3], sigma[:, :, 3, 3])


def test_the_noise_std_follows_sigma_elementwise() -> None:
    noise = shaped(AttentionNoise(4, scale=0.5))
    z = torch.rand(1, 4, 2, 2).expand(4000, -1, -1, -1)  # one feature, many draws
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        drawn = noise(z) - z
    expected = 0.5 * noise.sigma(z[:1])[0]
    assert torch.allclose(drawn.std(dim=0), expected, rtol=0.06)


def test_a_flat_feature_gets_per_element_noise() -> None:
    split = tiny_split("relu4")  # z is [N, 16]
    defended = PriProDefense(strength=0.5).apply(split)
    x = images(4)
    z = defended.edge(x)
    assert z.shape == (4, 16) and not torch.equal(z, split.edge(x))
    assert defended(x).shape == (4, NUM_CLASSES)


def test_the_generator_is_seeded_and_leaves_the_global_stream_alone() -> None:
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = PriProDefense(seed=2).apply(tiny_split())
    assert torch.equal(torch.get_rng_state(), state)
    second = PriProDefense(seed=2).apply(tiny_split())
    assert same_state(second, snapshot(first))


def test_the_budget_term_holds_the_mean_scale_at_the_budget() -> None:
    defense = PriProDefense(strength=1.0, budget=0.5, budget_weight=3.0, adversary_width=WIDTH)
    defended = defense.apply(tiny_split())
    x = images(8)
    terms = defense.loss_terms(batch_of(x), *defended.forward_with_features(x))
    assert terms["noise_budget"].item() == pytest.approx(0.0, abs=1e-10)  # σ starts at the budget
    with torch.no_grad():
        defense.noise_module().to_sigma.bias.add_(1.0)
    z, logits = defended.forward_with_features(x)
    sigma = defense.noise_module().sigma(defended.edge[0](x))
    expected = 3.0 * (sigma.mean() - 0.5) ** 2
    assert torch.allclose(defense.loss_terms(batch_of(x), z, logits)["noise_budget"], expected)


def test_the_adversarial_term_trains_the_generator_and_the_task_loss_the_edge() -> None:
    defense = PriProDefense(strength=1.0, adversary_width=WIDTH)
    defended = defense.apply(tiny_split())
    generator = defense.noise_module()
    shaped(generator)
    x = images(8)
    z, logits = defended.forward_with_features(x)
    terms = defense.loss_terms(batch_of(x), z, logits)
    assert terms.keys() == {"adversarial", "noise_budget"} and terms["adversarial"] < 0
    terms["adversarial"].backward(retain_graph=True)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters())
    assert all(p.grad is None for p in defended.edge[0].parameters())  # not the edge's weights
    assert all(p.grad is None for p in defense.adversary().parameters())  # nor the inverter's
    defended.zero_grad(set_to_none=True)
    F.cross_entropy(logits, batch_of(x).y).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in defended.edge[0].parameters())
    assert generator.to_sigma.weight.grad.abs().sum() > 0  # the task loss pushes σ too


def test_loss_terms_need_the_z_of_a_training_forward_of_the_applied_split() -> None:
    x = images(4)
    defense = PriProDefense(strength=1.0)
    with pytest.raises(RuntimeError, match="apply"):
        defense.loss_terms(batch_of(x), torch.zeros(4, 8, 6, 6), torch.zeros(4, 3))
    defended = defense.apply(tiny_split())
    z, logits = defended.forward_with_features(x)
    with pytest.raises(ValueError, match="latest training-mode"):
        defense.loss_terms(batch_of(x), z.clone(), logits)
    with pytest.raises(ValueError, match="SplitModel"):
        defense.loss_terms(batch_of(x), None, logits)


def test_a_trained_edge_can_be_copied_and_its_last_draw_is_dropped_in_eval_mode() -> None:
    defense = PriProDefense(strength=1.0)
    defended = defense.apply(tiny_split())
    defended.train()(images(4))
    assert defense.noise_module().last_draw is not None
    copied = copy.deepcopy(defended.edge)  # attacks copy the deployed edge (EDGE_ARCHITECTURE)
    assert copied[1].last_draw is None and defense.noise_module().last_draw is not None
    defended.eval()
    assert defense.noise_module().last_draw is None


def test_trains_in_the_loop_with_its_terms_and_hooks(tiny_data) -> None:
    defense = create_defense("pripro", strength=0.5, adversary_width=WIDTH)
    model = defense.apply(tiny_split())
    generator_before = snapshot(defense.noise_module())
    recorder = RecordLosses()
    result = fit(
        model,
        tiny_data,
        tiny_config(2),
        seed=0,
        loss_terms=[defense.loss_terms],
        hooks=[*defense.hooks(), recorder],
        progress=False,
    )
    assert math.isfinite(result.history[-1].train_loss)
    assert recorder.names and all(names == {"task", "adversarial", "noise_budget"} for names in recorder.names)
    assert not same_state(defense.noise_module(), generator_before)  # the generator learnt
    assert len(defense._adversarial.adversary_losses) == 2 * 3  # the inverter trained after every step
    held = {id(p) for group in recorder.optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in defense.noise_module().parameters()} <= held
    assert not held & {id(p) for p in defense.adversary().parameters()}


def test_describe_reports_every_setting() -> None:
    description = create_defense("pripro", strength=0.3, budget=2.0).describe()
    assert description == {
        "defense": "pripro",
        "strength": 0.3,
        "budget": 2.0,
        "budget_weight": 10.0,
        "adversarial_weight": 1.0,
        "adversary_steps": 1,
        "adversary_lr": 1e-3,
        "adversary_width": 32,
        "normalize_z": False,
        "seed": 0,
    }


@pytest.mark.parametrize(
    "options",
    [
        {"budget": 0.0},
        {"budget": float("inf")},
        {"budget_weight": -1.0},
        {"adversarial_weight": float("nan")},
        {"adversary_steps": 0},
    ],
)
def test_invalid_options_are_config_errors(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        create_defense("pripro", strength=1.0, **options)
