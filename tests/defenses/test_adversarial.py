from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from splitveil.defenses import AdversarialDefense, create_defense
from splitveil.defenses.adversarial import Standardize
from splitveil.errors import ConfigError
from splitveil.train import Batch, fit

from .conftest import RecordLosses, images, same_state, snapshot, tiny_config, tiny_split

WIDTH = 8  # a tiny inverter keeps these tests fast


def batch_of(x: torch.Tensor) -> Batch:
    return Batch(x, torch.zeros(len(x), dtype=torch.int64))


def features(count: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    x = images(count)
    return x, tiny_split().edge(x)


def test_the_inverter_is_built_lazily_from_the_first_feature() -> None:
    defense = AdversarialDefense(strength=1.0, adversary_width=WIDTH)
    assert defense.adversary() is None
    x, z = features()
    defense.loss_terms(batch_of(x), z, torch.zeros(8, 3))
    inverter = defense.adversary()
    assert inverter is not None and inverter(z.detach()).shape == x.shape
    assert not inverter.training  # left in eval mode between steps


def test_the_inverter_is_seeded_and_leaves_the_global_stream_alone() -> None:
    x, z = features()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first, second = AdversarialDefense(seed=5), AdversarialDefense(seed=5)
    first.reconstruction_error(z, x)
    assert torch.equal(torch.get_rng_state(), state)
    second.reconstruction_error(z, x)
    assert same_state(first.adversary(), snapshot(second.adversary()))


def test_the_loss_term_is_minus_strength_times_the_reconstruction_error() -> None:
    defense = AdversarialDefense(strength=0.7, adversary_width=WIDTH)
    x, z = features()
    term = defense.loss_terms(batch_of(x), z, torch.zeros(8, 3))
    assert term.keys() == {"adversarial"}
    inverter = copy.deepcopy(defense.adversary()).train()  # the term uses batch statistics, as training does
    assert torch.allclose(term["adversarial"], -0.7 * F.mse_loss(inverter(z), x))


def test_gradients_reach_the_edge_but_not_the_inverter() -> None:
    split = tiny_split()
    defense = AdversarialDefense(strength=1.0, adversary_width=WIDTH)
    x = images(8)
    defense.reconstruction_error(split.edge(x), x)  # build it
    inverter = defense.adversary()
    before = snapshot(inverter)
    defense.loss_terms(batch_of(x), split.edge(x), torch.zeros(8, 3))["adversarial"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in split.edge.parameters())
    assert all(p.grad is None for p in inverter.parameters())
    assert same_state(inverter, before)  # BatchNorm running statistics untouched too


def test_the_model_step_pushes_the_reconstruction_error_up() -> None:
    defense = AdversarialDefense(strength=1.0, adversary_width=WIDTH)
    x, z = features()
    z = z.detach().requires_grad_()
    term = defense.loss_terms(batch_of(x), z, torch.zeros(8, 3))["adversarial"]
    term.backward()
    stepped = z.detach() - 10.0 * z.grad
    assert defense.reconstruction_error(stepped, x) > defense.reconstruction_error(z.detach(), x)


def test_the_inverter_sees_z_as_produced() -> None:
    defense = AdversarialDefense(strength=1.0, adversary_width=WIDTH)
    x, z = features()
    z = z.detach() * 100.0  # an edge "escaping" by scale is met by an inverter that sees the scale
    seen: list[torch.Tensor] = []
    defense.reconstruction_error(z, x)
    defense.adversary().register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    defense.loss_terms(batch_of(x), z, torch.zeros(8, 3))
    defense.train_adversary(z, x)
    assert len(seen) == 2 and all(torch.equal(s, z) for s in seen)


def test_normalize_z_makes_the_game_scale_invariant() -> None:
    defense = AdversarialDefense(strength=1.0, adversary_width=WIDTH, normalize_z=True)
    x, z = features()
    z = z.detach()
    defense.reconstruction_error(z, x)
    assert isinstance(defense.adversary()[0], Standardize)
    assert torch.allclose(defense.reconstruction_error(50.0 * z, x), defense.reconstruction_error(z, x), atol=1e-5)


def test_adversary_steps_train_the_inverter_on_the_pair() -> None:
    defense = AdversarialDefense(strength=1.0, adversary_width=WIDTH, adversary_steps=3, adversary_lr=1e-2)
    x, z = features()
    losses = [defense.train_adversary(z, x) for _ in range(10)]
    assert losses[-1] < losses[0]
    assert defense.adversary_losses == losses


def test_single_sample_batches_are_skipped() -> None:
    defense = AdversarialDefense(strength=1.0, adversary_width=WIDTH)
    x, z = features(1)
    assert defense.train_adversary(z, x) is None
    assert defense.loss_terms(batch_of(x), z, torch.zeros(1, 3))["adversarial"].item() == 0.0


def test_a_differently_shaped_feature_needs_a_reset() -> None:
    defense = AdversarialDefense(strength=1.0, adversary_width=WIDTH)
    x, z = features()
    defense.train_adversary(z, x)
    with pytest.raises(ValueError, match="reset"):
        defense.train_adversary(z[:, :4], x)
    defense.reset()
    assert defense.adversary() is None and defense.train_adversary(z[:, :4], x) is not None


@pytest.mark.parametrize(
    "options", [{"adversary_steps": 0}, {"adversary_width": 0}, {"adversary_lr": 0.0}, {"adversary_lr": -1.0}]
)
def test_options_are_validated(options: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        create_defense("adversarial", strength=1.0, **options)


def train(defense: AdversarialDefense | None, data, *, epochs: int = 1, dropout: float = 0.0) -> tuple:
    """A fixed tiny split (feature dropout draws from the global stream), trained with or without ``defense``."""
    model = create_defense("feature-dropout", strength=dropout).apply(tiny_split())
    recorder = RecordLosses()
    terms = [] if defense is None else [defense.loss_terms]
    hooks = [] if defense is None else defense.hooks()
    fit(model, data, tiny_config(epochs), seed=0, loss_terms=terms, hooks=[*hooks, recorder], progress=False)
    return model, recorder


def test_min_max_training_trains_both_players(tiny_data) -> None:
    defense = AdversarialDefense(strength=0.5, adversary_width=WIDTH)
    model, recorder = train(defense, tiny_data, epochs=2)
    assert recorder.names and all(names == {"task", "adversarial"} for names in recorder.names)
    # The adversary's weights moved away from the identically seeded initial inverter.
    initial = AdversarialDefense(strength=0.5, adversary_width=WIDTH)
    x = tiny_data.train.images[:4]
    initial.reconstruction_error(model.edge(x), x)
    assert not same_state(defense.adversary(), snapshot(initial.adversary()))
    assert len(defense.adversary_losses) == 2 * 3  # 96 samples / 32 per batch, two epochs
    # The model's optimiser held the split's parameters only.
    held = {id(p) for group in recorder.optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in model.parameters()}
    assert not held & {id(p) for p in defense.adversary().parameters()}


def test_zero_strength_trains_exactly_as_without_the_defense(tiny_data) -> None:
    plain, _ = train(None, tiny_data, epochs=2, dropout=0.3)
    defense = AdversarialDefense(strength=0.0, adversary_width=WIDTH)
    defended, recorder = train(defense, tiny_data, epochs=2, dropout=0.3)
    assert same_state(defended, snapshot(plain))
    assert len(defense.adversary_losses) == 6  # the adversary did train alongside
    assert all(names == {"task", "adversarial"} for names in recorder.names)


def test_each_fit_starts_a_fresh_game(tiny_data) -> None:
    defense = AdversarialDefense(strength=0.5, adversary_width=WIDTH)
    first, _ = train(defense, tiny_data)
    first_inverter = snapshot(defense.adversary())
    second, _ = train(defense, tiny_data)
    assert same_state(second, snapshot(first))
    assert same_state(defense.adversary(), first_inverter)
    assert len(defense.adversary_losses) == 3


def test_an_optimiser_holding_the_inverter_is_refused() -> None:
    from splitveil.defenses.adversarial import _check_not_optimised_by

    defense = AdversarialDefense(strength=1.0, adversary_width=WIDTH)
    x, z = features()
    defense.train_adversary(z, x)
    with pytest.raises(RuntimeError, match="adversary"):
        _check_not_optimised_by(defense.adversary(), torch.optim.SGD(defense.adversary().parameters(), lr=0.1))
