from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from splitveil.attacks import AttackerView, Capability, WhiteBoxRMLE, build_decoder
from splitveil.attacks.training import train_on_pairs


def _train(module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, **options) -> list[float]:
    defaults = {"loss": F.mse_loss, "epochs": 2, "batch_size": 16, "lr": 1e-2, "seed": 3, "progress": False}
    return train_on_pairs(module, inputs, targets, **{**defaults, **options})


def test_training_is_seeded_and_leaves_the_global_rng_alone():
    inputs, targets = torch.randn(40, 5), torch.randn(40, 2)
    torch.manual_seed(1)
    first, second = nn.Linear(5, 2), nn.Linear(5, 2)
    second.load_state_dict(first.state_dict())
    torch.manual_seed(99)
    expected = torch.rand(1)
    torch.manual_seed(99)
    assert _train(first, inputs, targets) == _train(second, inputs, targets)
    assert torch.equal(torch.rand(1), expected)
    assert torch.equal(first.weight, second.weight)
    assert not first.training


def test_a_lone_trailing_sample_does_not_break_batch_norm():
    decoder = build_decoder((10,), (1, 4, 4), width=4)  # its stem BatchNorm sees 1x1 maps
    _train(decoder, torch.randn(17, 10), torch.rand(17, 1, 4, 4))


def test_only_the_module_is_optimised_through_a_frozen_head():
    module, head = nn.Linear(4, 4), nn.Linear(4, 3).requires_grad_(False)
    head_before = head.weight.clone()
    module_before = module.weight.clone()
    _train(module, torch.randn(32, 4), torch.randint(0, 3, (32,)), loss=F.cross_entropy, head=head)
    assert torch.equal(head.weight, head_before)
    assert not torch.equal(module.weight, module_before)


def test_bf16_training_keeps_float32_weights_and_learns_like_float32():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(256, 8, generator=generator)
    targets = inputs @ torch.randn(8, 3, generator=generator)
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        module = nn.Linear(8, 3)
        losses[precision] = _train(module, inputs, targets, epochs=30, precision=precision)
        assert module.weight.dtype == torch.float32
    assert losses["bf16"][-1] < 0.05 * losses["bf16"][0]
    assert abs(losses["bf16"][-1] - losses["fp32"][-1]) < 0.05 * losses["fp32"][0]


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        _train(nn.Linear(2, 2), torch.randn(8, 2), torch.randn(8, 2), precision="fp16")


def test_rmle_against_a_noisy_edge_is_reproducible_and_seeded():
    class GaussianNoise(nn.Module):  # a defense-like layer drawing from the global generator
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 0.05 * torch.randn_like(x)

    edge = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), GaussianNoise())
    view = AttackerView(capabilities={Capability.EDGE_WEIGHTS}, input_shape=(1, 8, 8), edge=edge)
    z = edge(torch.rand(2, 1, 8, 8)).detach()
    runs = [WhiteBoxRMLE(view, seed=seed, steps=20, progress=False).invert(z) for seed in (0, 0, 1)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
