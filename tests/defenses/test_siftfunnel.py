"""SiftFunnel: the channel-correlation and smoothed-KL terms, the funnel split, its FLOPs, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from splitveil.blocks.funnel import FunnelBlock, UpProjection, edge_output
from splitveil.defenses import SiftFunnelDefense, channel_correlation, create_defense, distance_correlation
from splitveil.defenses.siftfunnel import smoothed_kl, smoothed_targets
from splitveil.errors import ConfigError
from splitveil.models import create_model
from splitveil.split import cut, trace
from splitveil.train import Batch, fit

from .conftest import INPUT_SHAPE, NUM_CLASSES, RecordLosses, images, same_state, snapshot, tiny_config, tiny_split

TERMS = {"kl", "dcor", "channel_correlation", "feature_l1"}


def sample(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def batch_of(x: torch.Tensor, labels: list[int] | None = None) -> Batch:
    y = torch.tensor(labels) if labels is not None else torch.arange(len(x)) % NUM_CLASSES
    return Batch(x, y)


def zoo_split(name: str, at: str, **options: object):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model(name, input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES, **options)
    return cut(model, at)


def conv_flops(c_in: int, c_out: int, kernel: int, height: int, width: int) -> int:
    """torch's flop counter for a conv: 2 FLOPs per multiply-accumulate, the bias free."""
    return 2 * c_in * c_out * kernel * kernel * height * width


def attention_flops(channels: int, height: int, width: int, *, reduction: int, spatial_kernel: int = 7) -> int:
    """Squeeze-excitation (two 1x1 convs on the pooled vector) and CBAM's 2 → 1 spatial conv."""
    hidden = max(1, channels // reduction)
    return 2 * conv_flops(channels, hidden, 1, 1, 1) + conv_flops(2, 1, spatial_kernel, height, width)


# --- R_P: channel_correlation ------------------------------------------------------------------


def brute_force_channel_correlation(z: torch.Tensor) -> float:
    """numpy's Pearson correlation matrix per sample, the mean of its squared off-diagonal entries."""
    per_sample = []
    for maps in z.reshape(z.shape[0], z.shape[1], -1).numpy():
        r = np.corrcoef(maps)
        per_sample.append((r[~np.eye(len(r), dtype=bool)] ** 2).mean())
    return float(np.mean(per_sample))


def test_independent_channels_have_correlation_near_zero() -> None:
    z = sample(4, 6, 64, 64, seed=0)  # E[r²] = 1 / (positions − 1) ≈ 2.4e-4 for independent maps
    assert channel_correlation(z).item() < 1e-3
    assert channel_correlation(z[..., :8, :8]).item() > channel_correlation(z).item()  # shrinks with positions


def test_copies_of_one_channel_have_correlation_one() -> None:
    maps = sample(3, 1, 5, 5, seed=0)
    copies = torch.cat([maps, maps, maps], dim=1)
    assert channel_correlation(copies).item() == pytest.approx(1.0, abs=1e-12)
    # Pearson correlation ignores scale and offset, and r = -1 squares to 1.
    affine = torch.cat([maps, 3 * maps - 2, -0.5 * maps], dim=1)
    assert channel_correlation(affine).item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_numpy_corrcoef(seed: int) -> None:
    z = sample(5, 4, 3, 3, seed=seed)
    z[:, 3] = 0.7 * z[:, 0] + 0.3 * z[:, 3]  # some correlation to measure
    assert channel_correlation(z).item() == pytest.approx(brute_force_channel_correlation(z), abs=1e-12)


def test_batched_is_the_mean_of_the_samples() -> None:
    z = sample(6, 5, 4, 4, seed=2)
    looped = torch.stack([channel_correlation(z[i : i + 1]) for i in range(len(z))]).mean()
    assert torch.allclose(channel_correlation(z), looped)


def test_constant_channels_count_zero_with_finite_gradients() -> None:
    z = sample(2, 3, 4, 4, seed=0)
    z[:, 1] = 0.0  # a dead ReLU channel
    z.requires_grad_()
    value = channel_correlation(z)
    value.backward()
    expected = brute_force_channel_correlation(z.detach()[:, [0, 2]]) * 2 / 6  # only the (0, 2) pair counts
    assert value.item() == pytest.approx(expected, abs=1e-12)
    assert torch.isfinite(z.grad).all()


def test_fewer_than_two_channels_or_no_positions_give_zero() -> None:
    assert channel_correlation(sample(3, 1, 4, 4, seed=0)).item() == 0.0
    assert channel_correlation(sample(3, 8, seed=0)).item() == 0.0  # a flat feature: every map is one value
    with pytest.raises(ValueError, match=r"\[N, C"):
        channel_correlation(sample(3, seed=0))


def test_a_gradient_step_lowers_the_correlation() -> None:
    z = sample(2, 3, 4, 4, seed=0)
    z[:, 2] = z[:, 0] + 0.2 * z[:, 2]
    z.requires_grad_()
    value = channel_correlation(z)
    value.backward()
    assert channel_correlation(z.detach() - 0.5 * z.grad).item() < value.item()


# --- the smoothed-label KL ---------------------------------------------------------------------


def test_smoothed_targets_put_one_minus_eps_on_the_label() -> None:
    targets = smoothed_targets(torch.tensor([1, 0]), 5, smoothing=0.25)
    assert torch.allclose(targets.sum(dim=1), torch.ones(2))
    assert targets[0, 1] == 0.75 and targets[1, 0] == 0.75
    assert torch.allclose(targets[0, [0, 2, 3, 4]], torch.full((4,), 0.25 / 4))


def test_smoothed_kl_matches_torch_kl_div_and_vanishes_at_the_target() -> None:
    logits, labels = sample(6, 4, seed=0), torch.tensor([0, 1, 2, 3, 0, 1])
    targets = smoothed_targets(labels, 4, smoothing=0.2, dtype=torch.float64)
    reference = F.kl_div(F.log_softmax(logits, dim=1), targets, reduction="batchmean")
    assert smoothed_kl(logits, labels, smoothing=0.2).item() == pytest.approx(reference.item(), abs=1e-12)
    assert smoothed_kl(targets.log(), labels, smoothing=0.2).item() == pytest.approx(0.0, abs=1e-12)


def test_smoothed_kl_without_smoothing_is_the_cross_entropy() -> None:
    logits, labels = sample(6, 3, seed=1), torch.tensor([0, 1, 2, 2, 1, 0])
    assert smoothed_kl(logits, labels, smoothing=0.0).item() == pytest.approx(F.cross_entropy(logits, labels).item())


# --- the loss terms ----------------------------------------------------------------------------


def test_the_loss_terms_are_strength_times_weight_times_each_term() -> None:
    defense = SiftFunnelDefense(strength=0.5, kl_weight=5, dcor_weight=2, correlation_weight=3, l1_weight=0.1)
    x = images(8)
    batch = batch_of(x)
    z, logits = tiny_split().forward_with_features(x)
    terms = defense.loss_terms(batch, z, logits)
    assert terms.keys() == TERMS
    assert torch.allclose(terms["kl"], 0.5 * 5 * smoothed_kl(logits, batch.y, smoothing=0.25))
    assert torch.allclose(terms["dcor"], 0.5 * 2 * distance_correlation(x, z))
    assert torch.allclose(terms["channel_correlation"], 0.5 * 3 * channel_correlation(z))
    assert torch.allclose(terms["feature_l1"], 0.5 * 0.1 * z.abs().mean())


def test_a_zero_weight_gives_an_exact_zero() -> None:
    defense = SiftFunnelDefense(strength=1.0, dcor_weight=0.0)
    x = images(8)
    terms = defense.loss_terms(batch_of(x), *tiny_split().forward_with_features(x))
    assert terms["dcor"].item() == 0.0 and not terms["dcor"].requires_grad


@pytest.mark.parametrize("term", sorted(TERMS))
def test_every_term_reaches_the_edge_parameters(term: str) -> None:
    defense = SiftFunnelDefense(strength=1.0, funnel_channels=2)
    defended = defense.apply(tiny_split())
    x = images(8)
    defense.loss_terms(batch_of(x), *defended.forward_with_features(x))[term].backward()
    grads = [p.grad for p in defended.edge.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(g is None or torch.isfinite(g).all() for g in grads)


def test_needs_the_transmitted_feature() -> None:
    with pytest.raises(ValueError, match="SplitModel"):
        SiftFunnelDefense().loss_terms(batch_of(images(4)), None, torch.zeros(4, 3))


# --- the funnel split --------------------------------------------------------------------------


def test_without_funnel_channels_or_at_zero_strength_the_split_is_returned_unchanged() -> None:
    split = tiny_split()
    assert SiftFunnelDefense(strength=1.0).apply(split) is split
    assert SiftFunnelDefense(strength=0.0, funnel_channels=2, replace_last_conv=True).apply(split) is split


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_the_appended_funnel_narrows_z_and_the_cloud_widens_it_back(mode: str) -> None:
    split = tiny_split().train(mode == "train")
    before = snapshot(split)
    defended = SiftFunnelDefense(funnel_channels=2).apply(split)
    x = images(4)
    z = defended.edge(x)
    assert z.shape == (4, 2, 6, 6)
    assert defended.cloud(z).shape == (4, NUM_CLASSES) and defended(x).shape == (4, NUM_CLASSES)
    assert isinstance(defended.edge.funnel, FunnelBlock) and isinstance(defended.cloud.up, UpProjection)
    assert defended.cloud.up(z).shape == split.edge(x).shape  # the original cloud gets the width it expects
    # The halves are shared, untouched and keep their modes; the new modules take them.
    assert defended.edge.edge is split.edge and defended.cloud.cloud is split.cloud and same_state(split, before)
    assert all(m.training == (mode == "train") for m in defended.modules())


def test_appended_funnel_flops_are_the_attention_and_the_narrow_conv() -> None:
    split = tiny_split()  # z is [8, 6, 6] at relu22
    for kernel in (1, 3):
        defended = SiftFunnelDefense(funnel_channels=2, funnel_kernel=kernel, reduction=4).apply(split)
        added = defended.profile(INPUT_SHAPE).edge_flops - split.profile(INPUT_SHAPE).edge_flops
        assert added == attention_flops(8, 6, 6, reduction=4) + conv_flops(8, 2, kernel, 6, 6)
        # The cloud gains the up-projection: 3x3 convs 2 -> 8 -> 8.
        cloud_added = defended.profile(INPUT_SHAPE).cloud_flops - split.profile(INPUT_SHAPE).cloud_flops
        assert cloud_added == conv_flops(2, 8, 3, 6, 6) + conv_flops(8, 8, 3, 6, 6)
        assert defended.profile(INPUT_SHAPE).feature_shape == (2, 6, 6)


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_replacing_the_last_conv_lowers_the_edge_flops_by_the_configured_amount(channels: int) -> None:
    split = tiny_split()  # conv22: 8 -> 8 channels, 3x3, on 6x6
    defended = SiftFunnelDefense(funnel_channels=channels, replace_last_conv=True, reduction=2).apply(split)
    before, after = split.profile(INPUT_SHAPE), defended.profile(INPUT_SHAPE)
    expected = attention_flops(8, 6, 6, reduction=2) + conv_flops(8, channels, 3, 6, 6) - conv_flops(8, 8, 3, 6, 6)
    assert after.edge_flops - before.edge_flops == expected
    assert after.edge_flops < before.edge_flops and after.feature_shape == (channels, 6, 6)
    x = images(4)
    assert defended(x).shape == (4, NUM_CLASSES)
    # A copy of the edge: the given split's conv22 is still there, the copy's is the funnel.
    assert isinstance(split.edge.conv22, nn.Conv2d) and isinstance(defended.edge.conv22, FunnelBlock)
    assert defended.edge.conv22.conv.kernel_size == (3, 3) and defended.edge.conv22.conv.padding == (1, 1)


def test_replacing_the_last_conv_rebuilds_the_batch_norm_after_it() -> None:
    split = zoo_split("vgg-small", "relu2_1", widths=(4, 8, 8), hidden=16)  # conv2_1 -> bn2_1 -> relu2_1
    defended = SiftFunnelDefense(funnel_channels=3, replace_last_conv=True).apply(split)
    assert defended.edge.bn2_1.num_features == 3 and split.edge.bn2_1.num_features == 8
    x = images(4)
    for training in (True, False):
        defended.train(training)
        assert defended.edge(x).shape == (4, 3, 6, 6) and defended(x).shape == (4, NUM_CLASSES)


def test_replacing_a_conv_inside_a_residual_block_is_a_config_error() -> None:
    split = zoo_split("resnet8", "layer1.0")
    with pytest.raises(ConfigError, match="replace_last_conv=false"):
        SiftFunnelDefense(funnel_channels=4, replace_last_conv=True).apply(split)
    defended = SiftFunnelDefense(funnel_channels=4).apply(split)  # appending works after a residual sum
    assert defended.edge(images(2)).shape == (2, 4, 12, 12) and defended(images(2)).shape == (2, NUM_CLASSES)


def test_a_flat_feature_or_a_wider_funnel_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="NCHW"):
        SiftFunnelDefense(funnel_channels=2).apply(tiny_split("relu4"))
    with pytest.raises(ConfigError, match="at most 8"):
        SiftFunnelDefense(funnel_channels=9).apply(tiny_split())


def test_the_funnel_is_seeded_and_leaves_the_global_stream_alone() -> None:
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = SiftFunnelDefense(funnel_channels=2, seed=3).apply(tiny_split())
    assert torch.equal(torch.get_rng_state(), state)
    second = SiftFunnelDefense(funnel_channels=2, seed=3).apply(tiny_split())
    other = SiftFunnelDefense(funnel_channels=2, seed=4).apply(tiny_split())
    assert same_state(second, snapshot(first)) and not same_state(other, snapshot(first))


def test_edge_output_reads_the_width_from_the_graph() -> None:
    assert edge_output(trace(tiny_split("relu22").edge)).channels == 8
    assert edge_output(trace(tiny_split("pool1").edge)).channels == 4  # through a pooling layer
    flat = edge_output(trace(tiny_split("relu4").edge))
    assert flat.channels == 16 and not flat.spatial
    assert edge_output(trace(zoo_split("resnet8", "layer1.0").edge)).channels == 16  # through the residual sum
    with pytest.raises(ConfigError, match="cut before it"):
        edge_output(trace(cut(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.ReLU(), nn.LazyLinear(3)), "2").edge))


# --- training and the frozen-edge phase ----------------------------------------------------------


@pytest.mark.parametrize("replace_last_conv", [False, True])
def test_trains_the_funnel_split_in_the_loop(tiny_data, replace_last_conv: bool) -> None:
    defense = create_defense("siftfunnel", strength=1.0, funnel_channels=2, replace_last_conv=replace_last_conv)
    model = defense.apply(tiny_split())
    funnel_before = snapshot(model)
    recorder = RecordLosses()
    result = fit(
        model,
        tiny_data,
        tiny_config(),
        seed=0,
        loss_terms=[defense.loss_terms],
        hooks=[*defense.hooks(), recorder],
        progress=False,
    )
    assert recorder.names and all(names == {"task"} | TERMS for names in recorder.names)
    assert math.isfinite(result.history[0].train_loss) and not same_state(model, funnel_before)
    held = {id(p) for group in recorder.optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in model.parameters()}  # the funnel and the up-projection train too


def test_finalize_freezes_the_edge_for_the_cloud_fine_tuning(tiny_data) -> None:
    split = zoo_split("vgg-small", "relu2_1", widths=(4, 8, 8), hidden=16)  # BatchNorm in the edge
    defense = SiftFunnelDefense(strength=1.0, funnel_channels=3, replace_last_conv=True, finetune_epochs=1)
    model = defense.apply(split)
    assert defense.finetune_epochs == 1
    record = defense.finalize(model, model=nn.Identity(), input_shape=INPUT_SHAPE)
    assert record == {"frozen_edge": True}
    edge_before, cloud_before = snapshot(model.edge), snapshot(model.cloud)
    recorder = RecordLosses()
    fit(model, tiny_data, tiny_config(), seed=0, loss_terms=[defense.loss_terms], hooks=[recorder], progress=False)
    assert same_state(model.edge, edge_before)  # weights and BatchNorm running statistics
    assert not same_state(model.cloud, cloud_before)
    held = {id(p) for group in recorder.optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in model.cloud.parameters()}
    # A fresh split restored from the record is frozen the same way.
    fresh = defense.apply(zoo_split("vgg-small", "relu2_1", widths=(4, 8, 8), hidden=16))
    defense.restore(fresh, record)
    assert not any(p.requires_grad for p in fresh.edge.parameters())
    assert SiftFunnelDefense(strength=1.0).finalize(fresh, model=nn.Identity(), input_shape=INPUT_SHAPE) == {}
    with pytest.raises(ConfigError, match="record"):
        defense.restore(fresh, {"pruned": {}})


# --- options -----------------------------------------------------------------------------------


def test_describe_reports_every_setting_with_the_papers_defaults() -> None:
    description = create_defense("siftfunnel", strength=0.3, funnel_channels=4).describe()
    assert description == {
        "defense": "siftfunnel",
        "strength": 0.3,
        "kl_weight": 5.0,
        "dcor_weight": 2.0,
        "correlation_weight": 2.0,
        "l1_weight": 0.03,
        "smoothing": 0.25,
        "funnel_channels": 4,
        "funnel_kernel": 1,
        "reduction": 4,
        "replace_last_conv": False,
        "finetune_epochs": 0,
        "seed": 0,
    }


@pytest.mark.parametrize(
    "options",
    [
        {"kl_weight": -1.0},
        {"dcor_weight": float("nan")},
        {"l1_weight": float("inf")},
        {"smoothing": 1.0},
        {"smoothing": -0.1},
        {"funnel_channels": 0},
        {"funnel_channels": 2.5},
        {"funnel_kernel": 5},
        {"reduction": 0},
        {"replace_last_conv": True},
        {"replace_last_conv": "yes", "funnel_channels": 2},
        {"finetune_epochs": -1},
    ],
)
def test_invalid_options_are_config_errors(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        create_defense("siftfunnel", strength=1.0, **options)
