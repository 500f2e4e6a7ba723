"""Images for `splitveil infer`: pixel arrays are read; anything else is one ConfigError naming the file."""

import numpy as np
import pytest

from splitveil.edge.images import load_images
from splitveil.errors import ConfigError

SHAPE = (1, 4, 4)


def test_integer_and_float_arrays_are_read_as_pixels_in_unit_range(tmp_path):
    np.save(tmp_path / "ints.npy", np.full((2, 1, 4, 4), 255, dtype=np.uint8))
    np.save(tmp_path / "floats.npy", np.full((4, 4), 0.5, dtype=np.float32))
    images, names = load_images([tmp_path / "ints.npy", tmp_path / "floats.npy"], SHAPE)
    assert images.shape == (3, *SHAPE) and images.dtype == np.float32 and np.allclose(images[:2], np.ones((2, *SHAPE)))
    assert names == [f"{tmp_path / 'ints.npy'}[0]", f"{tmp_path / 'ints.npy'}[1]", str(tmp_path / "floats.npy")]


@pytest.mark.parametrize("dtype", [np.bool_, np.complex64, np.str_])
def test_arrays_that_are_not_pixels_are_refused(tmp_path, dtype):
    path = tmp_path / "odd.npy"
    np.save(path, np.zeros((1, 4, 4), dtype=dtype))
    with pytest.raises(ConfigError, match="not pixels"):
        load_images([path], SHAPE)


def test_an_empty_batch_is_refused(tmp_path):
    path = tmp_path / "empty.npy"
    np.save(path, np.zeros((0, 1, 4, 4), dtype=np.float32))
    with pytest.raises(ConfigError, match="holds no images"):
        load_images([path], SHAPE)


def test_a_header_declaring_more_than_the_file_holds_is_refused_before_allocating(tmp_path):
    path = tmp_path / "liar.npy"
    np.save(path, np.zeros((2, 1, 4, 4), dtype=np.float32))
    raw = path.read_bytes().replace(b"(2, 1, 4, 4)", b"(1000000000000, 1, 4, 4)")
    path.write_bytes(raw)
    with pytest.raises(ConfigError, match="truncated"):
        load_images([path], SHAPE)


def test_a_file_that_is_not_npy_is_named(tmp_path):
    path = tmp_path / "garbage.npy"
    path.write_bytes(b"not numpy at all")
    with pytest.raises(ConfigError, match="not a NumPy .npy file"):
        load_images([path], SHAPE)
