"""PATROL's finalize (fold masks, prune to a FLOPs budget with torch-pruning) and restore.

FLOPs of the tiny he-cnn edge cut at relu22 (input 1×12×12; 2 FLOPs per multiply-accumulate):
conv11 1→4 and conv12 4→4 at 12×12, conv21 4→8 and conv22 8→8 at 6×6:
10,368 + 41,472 + 20,736 + 41,472 = 114,048.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from splitveil.blocks.pruning import channel_groups, fold_masks
from splitveil.defenses import ChannelMask, PatrolDefense
from splitveil.errors import ConfigError
from splitveil.models import create_model
from splitveil.split import SplitModel, cut
from splitveil.train import Batch, fit

from .conftest import INPUT_SHAPE, NUM_CLASSES, RecordLosses, images, same_state, snapshot, tiny_config, tiny_split

UNPRUNED_FLOPS = 114_048
WIDTH = 8  # a tiny inverter keeps these tests fast


def tiny_model(name: str = "he-cnn", input_shape: tuple[int, ...] = INPUT_SHAPE, **options: object) -> nn.Module:
    widths = {"widths": (4, 8, 8)} | ({"hidden": 16} if name != "resnet8" else {})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return create_model(name, input_shape=input_shape, num_classes=NUM_CLASSES, **widths, **options)


def masked(defense: PatrolDefense, split: SplitModel, *, seed: int = 0, zeros: dict | None = None) -> SplitModel:
    """``defense.apply(split)`` with masks as if trained: distinct values in [0.5, 1], some exactly 0."""
    defended = defense.apply(split).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, mask in defense.masks().items():
            mask.mask.copy_(0.5 + 0.5 * torch.rand(mask.mask.shape, generator=generator))
            mask.mask[(zeros or {}).get(name, [])] = 0.0
    return defended


def finalize(defense: PatrolDefense, split: SplitModel) -> dict:
    """``defense.finalize`` of a split of the tiny he-cnn."""
    return defense.finalize(split, model=tiny_model(), input_shape=INPUT_SHAPE)


def test_finalize_meets_the_budget_and_folds_the_masks_away() -> None:
    defense = PatrolDefense(strength=1.0, flops_budget=60_000)
    defended = masked(defense, tiny_split()).train()
    record = finalize(defense, defended)
    assert all(module.training for module in defended.modules())  # torch-pruning traces in eval mode
    assert json.loads(json.dumps(record)) == record
    assert record["edge_flops_before"] == UNPRUNED_FLOPS and record["budget"] == 60_000
    assert record["edge_flops"] == defended.profile(INPUT_SHAPE).edge_flops <= 60_000
    assert defense.masks() == {} and not any(isinstance(m, ChannelMask) for m in defended.modules())
    assert all(isinstance(defended.edge.get_submodule(name), nn.Identity) for name in record["masks"])
    assert torch.isfinite(defended(images(4))).all()


def test_channels_whose_masks_are_zero_go_first_and_the_outputs_stay() -> None:
    # Removing conv12's channels 1, 3 and conv21's 0, 5, 6 leaves exactly 63,504 FLOPs; four fewer
    # removals (the zero masks rank first) would leave 69,984.
    zeros = {"mask_conv12": [1, 3], "mask_conv21": [0, 5, 6]}
    defense = PatrolDefense(strength=1.0, flops_budget=63_504)
    defended = masked(defense, tiny_split(), zeros=zeros)
    x = images(8)
    with torch.no_grad():
        z, logits = defended.forward_with_features(x)
    record = finalize(defense, defended)
    assert record["pruned"] == {"edge.conv12": [1, 3], "edge.conv21": [0, 5, 6]}
    assert defended.edge.conv12.out_channels == 2 and defended.edge.conv22.in_channels == 5
    with torch.no_grad():
        pruned_z, pruned_logits = defended.forward_with_features(x)
    assert torch.allclose(pruned_z, z, atol=1e-6) and torch.allclose(pruned_logits, logits, atol=1e-6)


def test_pruning_the_cut_layer_shrinks_the_feature_and_the_clouds_input() -> None:
    # Three of conv22's eight channels: 114,048 − 3/8 · 41,472 = 98,496 FLOPs.
    split = tiny_split()
    defense = PatrolDefense(strength=1.0, flops_budget=98_496)
    defended = masked(defense, split, zeros={"mask_conv22": [2, 4, 7]})
    x = images(8)
    with torch.no_grad():
        z, logits = defended.forward_with_features(x)
    assert finalize(defense, defended)["pruned"] == {"edge.conv22": [2, 4, 7]}
    with torch.no_grad():
        pruned_z, pruned_logits = defended.forward_with_features(x)
    assert pruned_z.shape[1] == 5 and defended.cloud.conv31.in_channels == 5
    assert defended.cloud is split.cloud  # pruned in place: the cloud stays the deployed one
    assert torch.allclose(pruned_z, z[:, [0, 1, 3, 5, 6]], atol=1e-6)
    assert torch.allclose(pruned_logits, logits, atol=1e-6)


def test_restore_replays_the_change_so_saved_weights_load_exactly(tmp_path) -> None:
    options = {"strength": 1.0, "flops_budget": 50_000}
    defense = PatrolDefense(**options)
    defended = masked(defense, tiny_split())
    record = json.loads(json.dumps(finalize(defense, defended)))
    save_file(defended.state_dict(), tmp_path / "model.safetensors")

    fresh_defense = PatrolDefense(**options)
    fresh = fresh_defense.apply(tiny_split(seed=1)).eval()  # other weights: they are all overwritten
    fresh_defense.restore(fresh, record)
    fresh.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=True)
    x = images(8)
    with torch.no_grad():
        assert torch.equal(fresh(x), defended(x)) and torch.equal(fresh.edge(x), defended.edge(x))
    assert fresh_defense.masks() == {}


def test_restore_onto_a_split_that_does_not_match_is_a_config_error() -> None:
    defense = PatrolDefense(strength=1.0, flops_budget=60_000)
    record = finalize(defense, masked(defense, tiny_split()))
    with pytest.raises(ConfigError, match="restore onto"):
        PatrolDefense(strength=1.0).restore(tiny_split(), record)
    with pytest.raises(ConfigError, match="pruning record"):
        PatrolDefense(strength=1.0).restore(tiny_split(), {"pruned": 3})


def test_an_unreachable_budget_is_a_config_error_and_changes_nothing() -> None:
    # min_channels=3 everywhere: 7,776 + 23,328 + 5,832 + 5,832 = 42,768 FLOPs at the least.
    defense = PatrolDefense(strength=1.0, flops_budget=42_767, min_channels=3)
    defended = masked(defense, tiny_split())
    before = snapshot(defended)
    with pytest.raises(ConfigError, match=r"42,768 FLOPs.*raise the budget.*min_channels"):
        finalize(defense, defended)
    assert same_state(defended, before) and len(defense.masks()) == 4


def test_no_layer_is_pruned_below_min_channels() -> None:
    defense = PatrolDefense(strength=1.0, flops_budget=42_768, min_channels=3)
    defended = masked(defense, tiny_split())
    finalize(defense, defended)
    convs = [m for m in defended.edge.modules() if isinstance(m, nn.Conv2d)]
    assert [conv.out_channels for conv in convs] == [3, 3, 3, 3]


def test_budget_cut_prunes_to_the_edge_flops_of_a_shallower_cut() -> None:
    budget = cut(tiny_model(), at="relu21").profile(INPUT_SHAPE).edge_flops
    assert budget == 72_576
    defense = PatrolDefense(strength=1.0, budget_cut="relu21")
    defended = masked(defense, tiny_split())
    record = finalize(defense, defended)
    assert record["budget"] == budget and defended.profile(INPUT_SHAPE).edge_flops <= budget


@pytest.mark.parametrize("options", [{}, {"flops_budget": 1e9}])
def test_no_budget_or_a_met_budget_prunes_nothing(options: dict[str, float]) -> None:
    defense = PatrolDefense(strength=1.0, **options)
    defended = masked(defense, tiny_split())
    before = snapshot(defended)
    assert finalize(defense, defended) == {}
    assert same_state(defended, before) and len(defense.masks()) == 4


def test_zero_strength_finalize_returns_nothing_and_changes_nothing() -> None:
    defense = PatrolDefense(strength=0.0, flops_budget=1.0)
    split = defense.apply(tiny_split())
    before = snapshot(split)
    assert finalize(defense, split) == {}
    assert same_state(split, before)
    defense.restore(split, {})  # nothing to replay
    assert same_state(split, before)


def test_the_pruned_split_fine_tunes_with_the_same_terms(tiny_data) -> None:
    defense = PatrolDefense(strength=0.5, flops_budget=60_000, adversary_width=WIDTH)
    model = defense.apply(tiny_split())
    train = {"seed": 0, "loss_terms": [defense.loss_terms], "progress": False}
    fit(model, tiny_data, tiny_config(), hooks=defense.hooks(), **train)
    assert finalize(defense, model)
    x = images(8)
    terms = defense.loss_terms(Batch(x, torch.zeros(8, dtype=torch.int64)), *model.forward_with_features(x))
    assert terms["mask_l1"].item() == 0.0 and terms["lipschitz"] > 0  # no masks left; blocks still there
    terms["lipschitz"].backward()
    assert all(p.grad is not None for p in model.edge.parameters())
    recorder = RecordLosses()
    fit(model, tiny_data, tiny_config(), hooks=[*defense.hooks(), recorder], **train)
    assert all(names == {"task", "mask_l1", "lipschitz", "adversarial"} for names in recorder.names)


def test_masks_after_batch_norm_fold_into_it() -> None:
    model = tiny_model("vgg-small")
    defense = PatrolDefense(strength=1.0)
    defended = masked(defense, cut(model, at="relu2_1"))
    x = images(8)
    with torch.no_grad():
        expected = defended(x)
        folded = copy.deepcopy(defended)
        fold_masks(folded.edge)
        assert torch.allclose(folded(x), expected, atol=1e-6)
    assert folded.edge.bn1_1.weight is not None and not any(isinstance(m, ChannelMask) for m in folded.modules())


def test_resnet_channels_coupled_by_the_skip_are_ranked_and_removed_together() -> None:
    # The stem's output and block layer1.0's conv2 output are summed: one group of channels. A
    # channel is ranked by the larger of its two masks, so only channel 1 (zero in both) is free.
    input_shape = (3, 8, 8)
    model = tiny_model("resnet8", input_shape)
    split = cut(model, at="layer1.0")
    defense = PatrolDefense(strength=1.0, flops_budget=split.profile(input_shape).edge_flops - 1)  # one must go
    zeros = {"mask_stem_conv": [1, 2], "mask_layer1_0_conv2": [1]}
    defended = masked(defense, split, zeros=zeros)
    folded = copy.deepcopy(defended)
    scores = {f"edge.{conv}": values.abs() for conv, values in fold_masks(folded.edge).items()}
    groups = dict(channel_groups(folded, scores, input_shape=input_shape))
    assert list(groups) == ["edge.stem.conv", "edge.layer1.0.conv1"]
    assert groups["edge.stem.conv"][1] == 0 and groups["edge.stem.conv"][2] > 0

    x = torch.rand(4, *input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = defended(x)
    record = defense.finalize(defended, model=model, input_shape=input_shape)
    assert record["pruned"] == {"edge.stem.conv": [1]}
    assert defended.edge.get_submodule("layer1.0.conv2").out_channels == 3
    with torch.no_grad():
        assert torch.allclose(defended(x), logits, atol=1e-5)
