"""Graph surgery on cut halves: find the reading/writing layer, widen, resize and slice it."""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn

from splitveil.errors import ConfigError
from splitveil.surgery import first_layer, keep_output_channels, last_conv, resize_input, widen_input


def traced(*layers: nn.Module) -> fx.GraphModule:
    return fx.symbolic_trace(nn.Sequential(*layers))


def test_the_first_layer_is_found_through_activations_and_pooling() -> None:
    module = traced(nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1))
    target, layer = first_layer(module)
    assert target == "2" and layer.in_channels == 3


def test_a_batch_norm_before_any_conv_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="BatchNorm2d"):
        first_layer(traced(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3)))


def test_widening_keeps_the_original_weights_for_the_original_channels() -> None:
    module = traced(nn.Conv2d(3, 4, 3, padding=1))
    x = torch.rand(2, 3, 5, 5)
    expected = module(x)
    assert widen_input(module, 2) == 3
    torch.testing.assert_close(module(torch.cat([x, torch.zeros(2, 2, 5, 5)], dim=1)), expected)


def test_resizing_a_linear_input_gives_a_fresh_layer_of_that_width() -> None:
    module = traced(nn.Linear(6, 2))
    resize_input(module, 3)
    assert module(torch.rand(4, 3)).shape == (4, 2)


def test_slicing_the_last_conv_keeps_exactly_those_channels() -> None:
    module = traced(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.MaxPool2d(2))
    x = torch.rand(2, 1, 8, 8)
    full = module(x)
    keep_output_channels(module, [4, 1])
    torch.testing.assert_close(module(x), full[:, [4, 1]])


def test_an_output_that_is_not_a_conv_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="does not come from a convolution"):
        last_conv(traced(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
