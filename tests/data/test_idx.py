"""IDX reader: round trips on tiny synthetic files and clear errors on damaged ones."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from splitveil.data.idx import IdxFormatError, read_idx
from splitveil.errors import ConfigError


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([7, 0, 9], dtype=np.uint8),
        np.array([[-5, 70000], [1, 2]], dtype=np.int32),
        np.array([0.5, -1.25], dtype=np.float32),
    ],
)
def test_round_trip(tmp_path, idx_writer, array, gz):
    path = idx_writer(tmp_path / "x.idx", array, gz=gz)
    loaded = read_idx(path)
    assert loaded.shape == array.shape
    assert loaded.dtype == array.dtype  # native byte order, same kind
    np.testing.assert_array_equal(loaded, array)


def test_gzip_detected_by_content_not_name(tmp_path, idx_writer):
    array = np.ones((2, 2), dtype=np.uint8)
    path = idx_writer(tmp_path / "no-suffix", array, gz=True)
    np.testing.assert_array_equal(read_idx(path), array)


def test_bad_magic_names_file(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(b"\x12\x34\x08\x01" + b"\x00\x00\x00\x01" + b"\x00")
    with pytest.raises(IdxFormatError, match="bad.idx.*not an IDX file"):
        read_idx(path)


def test_unknown_type_code(tmp_path):
    path = tmp_path / "type.idx"
    path.write_bytes(b"\x00\x00\x42\x01\x00\x00\x00\x01\x00")
    with pytest.raises(IdxFormatError, match="not an IDX file"):
        read_idx(path)


def test_truncated_data_is_a_config_error(tmp_path, idx_writer):
    path = idx_writer(tmp_path / "t.idx", np.zeros((4, 5), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ConfigError, match=r"t\.idx.*truncated.*needs 20 data bytes, found 17"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "h.idx"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x02")
    with pytest.raises(IdxFormatError, match="truncated IDX header"):
        read_idx(path)


def test_trailing_bytes(tmp_path, idx_writer):
    path = idx_writer(tmp_path / "tail.idx", np.zeros(3, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(IdxFormatError, match="trailing bytes"):
        read_idx(path)


def test_damaged_gzip(tmp_path, idx_writer):
    path = idx_writer(tmp_path / "d.idx.gz", np.zeros((50, 50), dtype=np.uint8), gz=True)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(IdxFormatError, match=r"d\.idx\.gz"):
        read_idx(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.idx"
    path.write_bytes(b"")
    with pytest.raises(IdxFormatError, match="empty.idx"):
        read_idx(path)


def test_gzip_of_garbage_is_reported_as_not_idx(tmp_path):
    path = tmp_path / "g.gz"
    path.write_bytes(gzip.compress(b"hello world"))
    with pytest.raises(IdxFormatError, match="not an IDX file"):
        read_idx(path)
