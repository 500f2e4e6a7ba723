"""PATROL's masks, loss terms and training (pruning is in test_patrol_pruning.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from splitveil.defenses import ChannelMask, PatrolDefense, create_defense
from splitveil.defenses.lipschitz import blockwise_lipschitz
from splitveil.errors import ConfigError
from splitveil.models import create_model
from splitveil.split import cut
from splitveil.train import Batch, fit

from .conftest import INPUT_SHAPE, NUM_CLASSES, RecordLosses, images, same_state, snapshot, tiny_config, tiny_split

WIDTH = 8  # a tiny inverter keeps these tests fast
MASKS = ["mask_conv11", "mask_conv12", "mask_conv21", "mask_conv22"]


def batch_of(x: torch.Tensor) -> Batch:
    return Batch(x, torch.zeros(len(x), dtype=torch.int64))


def tiny_vgg_split(at: str = "relu2_1"):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model("vgg-small", input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES, widths=(4, 8, 8), hidden=16)
    return cut(model, at)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_apply_masks_every_edge_conv_and_changes_no_output(mode: str) -> None:
    split = tiny_split().train(mode == "train")
    before = snapshot(split)
    defense = PatrolDefense(strength=0.5)
    defended = defense.apply(split)
    assert list(defense.masks()) == MASKS
    assert all(torch.equal(m.mask, torch.ones(m.mask.shape)) for m in defense.masks().values())
    x = images(4)
    with torch.no_grad():
        assert torch.equal(defended.edge(x), split.edge(x)) and torch.equal(defended(x), split(x))
    # The edge is a masked copy; the given split and its weights are untouched; the cloud is shared.
    assert defended.cloud is split.cloud and defended.edge is not split.edge
    assert not any(isinstance(m, ChannelMask) for m in split.modules()) and same_state(split, before)
    assert not {id(p) for p in defended.edge.parameters()} & {id(p) for p in split.edge.parameters()}


def test_a_mask_scales_its_convs_output_channels() -> None:
    split = tiny_split().eval()
    defense = PatrolDefense(strength=0.5)
    defended = defense.apply(split)
    with torch.no_grad():
        defense.masks()["mask_conv22"].mask[[0, 5]] = torch.tensor([0.0, 2.0])
        z, reference = defended.edge(images(4)), split.edge(images(4))
    assert (z[:, 0] == 0).all()
    assert torch.allclose(z[:, 5], 2.0 * reference[:, 5])  # ReLU is positively homogeneous
    assert torch.equal(z[:, 1:5], reference[:, 1:5])


def test_masks_go_after_the_batch_norm_that_follows_a_conv() -> None:
    split = tiny_vgg_split().eval()
    defense = PatrolDefense(strength=0.5)
    defended = defense.apply(split)
    assert [m.follows for m in defense.masks().values()] == ["bn1_1", "bn1_2", "bn2_1"]
    order = [node.target for node in defended.edge.graph.nodes if node.op == "call_module"]
    assert order[:4] == ["conv1_1", "bn1_1", "mask_conv1_1", "relu1_1"]
    x = images(4)
    with torch.no_grad():
        assert torch.equal(defended(x), split(x))


def test_zero_strength_is_the_undefended_split() -> None:
    split = tiny_split()
    defense = PatrolDefense(strength=0.0, flops_budget=1.0)
    assert defense.apply(split) is split and defense.masks() == {}
    x = images(8)
    z, logits = split.forward_with_features(x)
    terms = defense.loss_terms(batch_of(x), z, logits)
    assert terms.keys() == {"mask_l1", "lipschitz", "adversarial"}
    assert all(value.item() == 0.0 for value in terms.values())


def test_the_loss_terms_are_positive_and_their_gradients_reach_the_edge_and_masks() -> None:
    split = tiny_split()
    defense = PatrolDefense(strength=0.5, adversary_width=WIDTH)
    defended = defense.apply(split)
    x = images(8)
    terms = defense.loss_terms(batch_of(x), *defended.forward_with_features(x))
    assert terms.keys() == {"mask_l1", "lipschitz", "adversarial"}
    assert terms["mask_l1"].item() == pytest.approx(1e-3 * (4 + 4 + 8 + 8))  # λ_m Σ|m| with every m = 1
    assert terms["lipschitz"] > 0
    for name in ("mask_l1", "lipschitz"):
        defended.zero_grad(set_to_none=True)
        terms[name].backward(retain_graph=True)
        masks = [m.mask for m in defense.masks().values()]
        assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in masks), name
    # The Lipschitz term reaches every edge weight and nothing in the cloud.
    edge_weights = [p for n, p in defended.edge.named_parameters() if not n.startswith("mask_")]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in edge_weights)
    assert all(p.grad is None for p in defended.cloud.parameters())


@pytest.mark.parametrize("relative", [False, True])
def test_the_lipschitz_term_is_strength_times_weight_times_the_block_ratios(relative: bool) -> None:
    defense = PatrolDefense(strength=0.5, lipschitz_weight=0.2, perturbation=0.1, seed=3, relative_lipschitz=relative)
    defended = defense.apply(tiny_split())
    x = images(8)
    term = defense.loss_terms(batch_of(x), *defended.forward_with_features(x))["lipschitz"]
    blocks = [defended.edge.get_submodule(name) for name in MASKS]
    expected = blockwise_lipschitz(
        defended.edge, blocks, x, perturbation=0.1, generator=torch.Generator().manual_seed(3), relative=relative
    ).sum()
    assert torch.allclose(term, 0.5 * 0.2 * expected)


def test_perturbations_restart_from_the_seed_at_every_fit() -> None:
    defense = PatrolDefense(strength=1.0)
    defense.apply(tiny_split())
    x = images(4)
    first, second = defense.block_lipschitz(x), defense.block_lipschitz(x)
    assert not torch.equal(first, second)  # a fresh δ every step
    own_hook = defense.hooks()[0]  # PATROL's own hook comes first; the inverter's follow
    own_hook.on_train_start(None)  # type: ignore[arg-type]  # it needs no state
    assert torch.equal(defense.block_lipschitz(x), first)


def test_trains_in_the_loop_with_its_terms_and_hooks(tiny_data) -> None:
    defense = PatrolDefense(strength=0.5, adversary_width=WIDTH)
    model = defense.apply(tiny_split())
    recorder = RecordLosses()
    hooks = [*defense.hooks(), recorder]
    fit(model, tiny_data, tiny_config(2), seed=0, loss_terms=[defense.loss_terms], hooks=hooks, progress=False)
    assert recorder.names and all(names == {"task", "mask_l1", "lipschitz", "adversarial"} for names in recorder.names)
    masks = [m.mask for m in defense.masks().values()]
    assert any(not torch.equal(m, torch.ones_like(m)) for m in masks)  # the masks trained
    held = {id(p) for group in recorder.optimizer.param_groups for p in group["params"]}
    assert {id(m) for m in masks} <= held
    assert defense.adversary() is not None and not held & {id(p) for p in defense.adversary().parameters()}


def test_describe_reports_every_setting() -> None:
    description = create_defense("patrol", strength=0.3, budget_cut="relu21", min_channels=3).describe()
    assert description["defense"] == "patrol" and description["strength"] == 0.3
    assert description["budget_cut"] == "relu21" and description["flops_budget"] is None
    expected = {"mask_l1", "lipschitz_weight", "adversarial_weight", "perturbation", "min_channels", "finetune_epochs"}
    assert (
        expected | {"adversary_steps", "adversary_lr", "adversary_width", "normalize_z", "seed"} <= description.keys()
    )
    assert create_defense("patrol", strength=0.3, finetune_epochs=5).finetune_epochs == 5
    assert PatrolDefense().finetune_epochs == 3


@pytest.mark.parametrize(
    "options",
    [
        {"mask_l1": -1.0},
        {"lipschitz_weight": float("nan")},
        {"adversarial_weight": float("inf")},
        {"perturbation": 0.0},
        {"flops_budget": 0.0},
        {"flops_budget": 1e5, "budget_cut": "relu21"},
        {"budget_cut": ""},
        {"min_channels": 0},
        {"finetune_epochs": -1},
        {"adversary_steps": 0},
    ],
)
def test_invalid_options_are_config_errors(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        create_defense("patrol", strength=1.0, **options)


def test_an_edge_without_convolutions_is_a_config_error() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(144, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(ConfigError, match="no Conv2d"):
        PatrolDefense(strength=1.0).apply(cut(model, at="2"))


def test_loss_terms_before_apply_say_what_to_do() -> None:
    x = images(4)
    with pytest.raises(RuntimeError, match="apply"):
        PatrolDefense(strength=1.0).loss_terms(batch_of(x), torch.zeros(4, 8, 6, 6), torch.zeros(4, 3))
