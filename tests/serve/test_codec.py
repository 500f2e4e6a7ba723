"""The wire format: round trips, size and error bounds of each codec, and malformed bodies."""

import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from splitveil.errors import WireFormatError
from splitveil.serve.codec import CODECS, MAGIC, WIRE_VERSION, decode, decode_array, encode, encode_array, read_header

SVT = MAGIC + bytes([WIRE_VERSION])  # a header's first four bytes


@pytest.mark.parametrize("compress", [False, True])
def test_float32_round_trip_is_exact(compress):
    z = torch.randn(3, 4, 5, 5)
    assert torch.equal(decode(encode(z, compress=compress)), z)


def test_float16_round_trip_is_within_half_precision():
    z = torch.randn(2, 8, 7, 7) * 3
    back = decode(encode(z, codec="float16"))
    assert torch.allclose(back, z, rtol=1e-3, atol=1e-3)


def test_int8_error_is_at_most_half_a_step_of_each_channel():
    z = torch.rand(2, 3, 6, 6) * torch.tensor([0.01, 1.0, 100.0]).view(1, 3, 1, 1)
    back = decode(encode(z, codec="int8"))
    step = (z.amax(dim=(2, 3)) - z.amin(dim=(2, 3))) / 255
    assert ((back - z).abs() <= step[..., None, None] / 2 + 1e-6).all()


def test_int8_flat_features_quantise_per_sample():
    z = torch.stack([torch.linspace(0, 1, 50), torch.linspace(-100, 100, 50)])
    back = decode(encode(z, codec="int8"))
    assert (back[0] - z[0]).abs().max() <= 1 / 255 / 2 + 1e-6


def test_constant_channels_survive_int8():
    z = torch.full((1, 2, 3, 3), 0.75)
    assert torch.equal(decode(encode(z, codec="int8")), z)


def test_sizes_shrink_as_documented():
    z = torch.rand(1, 32, 14, 14)
    sizes = {codec: len(encode(z, codec=codec)) for codec in CODECS}
    assert sizes["float32"] / sizes["float16"] > 1.99
    assert sizes["float32"] / sizes["int8"] > 3.5
    relu = torch.relu(torch.randn(1, 32, 14, 14))
    assert len(encode(relu, compress=True)) < len(encode(relu))


def test_header_reports_shape_and_codec_without_decoding():
    header = read_header(encode(torch.zeros(2, 3), codec="float16", compress=True))
    assert (header.codec, header.compressed, header.shape) == ("float16", True, (2, 3))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "shorter than"),
        (b"XYZ\x01\x00\x00\x01\x02\x00\x00\x00", "not a splitveil tensor"),
        (b"SVT\x09\x00\x00\x01\x02\x00\x00\x00", "version 9"),
        (SVT + b"\x07\x00\x01\x02\x00\x00\x00", "unknown codec id"),
        (SVT + b"\x00\x02\x01\x02\x00\x00\x00", "unknown header flags"),
        (SVT + b"\x00\x00\x00", "ndim 0"),
        (SVT + b"\x00\x00\x02\x02\x00", "ends inside"),
        (SVT + b"\x00\x00\x01\x02\x00\x00\x00" + b"\x00" * 7, "needs 8"),
    ],
)
def test_malformed_bodies_are_named(body, message):
    with pytest.raises(WireFormatError, match=message):
        decode(body)


def test_compressed_body_cannot_inflate_past_its_shape():
    import zstandard

    bomb = zstandard.ZstdCompressor().compress(b"\x00" * 10_000_000)
    body = SVT + b"\x00\x01\x01" + struct.pack("<I", 4) + bomb
    with pytest.raises(WireFormatError, match="needs 16"):
        decode(body)


def _zstd_body(payload: bytes, elements: int = 4) -> bytes:
    """A float32 body of shape (elements,) whose payload is ``payload``, flagged as zstd."""
    return SVT + b"\x00\x01\x01" + struct.pack("<I", elements) + payload


def test_a_frame_declaring_more_than_the_shape_is_refused_unread():
    import zstandard

    # zstd decompresses a frame that declares its size into a buffer of that size (whatever cap is
    # asked for), so the declaration is refused from the frame header, before anything is allocated.
    frame = zstandard.ZstdCompressor().compress(b"\x00" * 10_000_000)
    with pytest.raises(WireFormatError, match="declares 10000000 bytes but the header's shape needs 16"):
        decode(_zstd_body(frame))


def test_an_undeclared_frame_cannot_inflate_past_its_shape():
    import zstandard

    frame = zstandard.ZstdCompressor(write_content_size=False).compress(b"\x00" * 10_000_000)
    with pytest.raises(WireFormatError, match="into the 16 bytes"):
        decode(_zstd_body(frame))
    exact = zstandard.ZstdCompressor(write_content_size=False).compress(b"\x00" * 16)
    assert torch.equal(decode(_zstd_body(exact)), torch.zeros(4))


@pytest.mark.parametrize("declare_size", [True, False])
def test_bytes_after_the_zstd_frame_are_refused_like_a_raw_bodys(declare_size):
    import zstandard

    frame = zstandard.ZstdCompressor(write_content_size=declare_size).compress(b"\x00" * 16)
    with pytest.raises(WireFormatError, match="3 bytes after its frame"):
        decode(_zstd_body(frame + b"abc"))
    raw = SVT + b"\x00\x00\x01" + struct.pack("<I", 4) + b"\x00" * 16
    with pytest.raises(WireFormatError, match="needs 16"):
        decode(raw + b"abc")


def test_a_multi_frame_zstd_payload_is_refused_with_a_message_that_says_so():
    import zstandard

    frame = zstandard.ZstdCompressor().compress(b"\x00" * 8)
    with pytest.raises(WireFormatError, match="more than one frame"):
        decode(_zstd_body(frame + frame))
    skippable = b"\x50\x2a\x4d\x18" + struct.pack("<I", 2) + b"hi"
    whole = zstandard.ZstdCompressor().compress(b"\x00" * 16)
    with pytest.raises(WireFormatError, match="more than one frame"):
        decode(_zstd_body(whole + skippable))


def test_a_compressed_payload_that_is_not_zstd_is_named():
    with pytest.raises(WireFormatError, match="does not start with a zstd frame"):
        decode(_zstd_body(b"not zstd at all"))


def test_non_finite_values_are_refused_both_ways():
    with pytest.raises(WireFormatError, match="NaN"):
        encode(torch.tensor([1.0, float("nan")]))
    body = SVT + b"\x00\x00\x01" + struct.pack("<I", 1) + struct.pack("<f", float("inf"))
    with pytest.raises(WireFormatError, match="infinite"):
        decode(body)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    codec=st.sampled_from(CODECS),
    compress=st.booleans(),
    scale=st.floats(1e-3, 1e3),
)
def test_every_codec_round_trips_any_shape(shape, codec, compress, scale):
    z = torch.randn(*shape) * scale
    back = decode(encode(z, codec=codec, compress=compress))
    assert back.shape == z.shape and back.dtype == torch.float32
    magnitude = z.abs().max().item()
    # int8: half a step, the step spanning the row's range widened by the float16 rounding of its minimum
    int8_step = ((z.max() - z.min()).item() + 1e-3 * magnitude) / 255
    tolerance = {"float32": 0.0, "float16": 1e-3 * scale * 8, "int8": int8_step / 2}
    assert (back - z).abs().max().item() <= tolerance[codec] + 1e-6 * max(1.0, magnitude)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_never_crash_the_decoder(body):
    try:
        decode(body)
    except WireFormatError:
        pass


def test_codec_table_measures_every_codec_against_float32(tiny_data):
    from splitveil.models import create_model
    from splitveil.perf.codecs import codec_table
    from splitveil.split import cut

    split = cut(
        create_model("he-cnn", input_shape=(1, 12, 12), num_classes=3, widths=[4, 8, 8], hidden=16), at="relu22"
    )
    rows = codec_table(split, tiny_data.test.images, tiny_data.test.labels, batch=10)
    assert [row["codec"] for row in rows] == list(CODECS)
    assert rows[0]["fewer_bytes"] == 1.0 and rows[0]["accuracy_loss_points"] == 0.0
    assert rows[1]["fewer_bytes"] > 1.9 and rows[2]["fewer_bytes"] > rows[1]["fewer_bytes"]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("compress", [False, True])
def test_numpy_arrays_speak_the_same_wire_as_tensors(codec, compress):
    """A device without torch encodes and decodes numpy arrays into the very bytes a tensor gives."""
    z = torch.randn(3, 4, 5, 5) * torch.tensor([0.01, 1.0, 10.0, 100.0]).view(1, 4, 1, 1)
    body = encode(z, codec=codec, compress=compress)
    assert encode_array(z.numpy(), codec=codec, compress=compress) == body
    array = decode_array(body)
    assert isinstance(array, np.ndarray) and array.dtype == np.float32 and array.flags.writeable
    assert np.array_equal(array, decode(body).numpy())


@pytest.mark.parametrize("codec", CODECS)
def test_an_empty_batch_round_trips_in_every_codec(codec):
    empty = torch.zeros(0, 3, 2, 2)
    assert decode(encode(empty, codec=codec)).shape == (0, 3, 2, 2)
