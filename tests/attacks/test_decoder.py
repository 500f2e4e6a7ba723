from __future__ import annotations

import pytest
import torch

from splitveil.attacks import build_decoder


@pytest.mark.parametrize(
    ("feature_shape", "input_shape"),
    [
        ((16, 28, 28), (1, 28, 28)),
        ((32, 14, 14), (1, 28, 28)),
        ((64, 7, 7), (1, 28, 28)),
        ((64, 3, 3), (1, 28, 28)),
        ((256,), (1, 28, 28)),
        ((8, 6, 6), (1, 25, 25)),
        ((8, 12, 12), (3, 25, 25)),
        ((100,), (3, 25, 25)),
        ((4, 5, 3), (3, 20, 13)),  # non-square
        ((16, 32, 32), (3, 16, 16)),  # a feature larger than the image
        ((8, 4, 4, 2), (1, 12, 12)),  # any non-[C, h, w] feature is treated as flat
    ],
)
def test_decoder_output_is_exactly_the_input_shape_in_unit_range(feature_shape, input_shape):
    decoder = build_decoder(feature_shape, input_shape, width=8)
    out = decoder(torch.randn(2, *feature_shape))
    assert out.shape == (2, *input_shape)
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_upsampling_stages_are_added_only_as_needed():
    def stages(feature_shape):
        names = [name for name, _ in build_decoder(feature_shape, (1, 28, 28)).named_children()]
        return sum(name.startswith("up") and name[2:].isdigit() for name in names)

    assert [stages((16, 28, 28)), stages((32, 14, 14)), stages((64, 7, 7)), stages((64, 3, 3))] == [0, 1, 2, 4]


def test_width_sets_the_first_stage():
    assert build_decoder((16, 7, 7), (1, 28, 28), width=32).stem.out_channels == 32
    with pytest.raises(ValueError):
        build_decoder((16, 7, 7), (1, 28, 28), width=0)
