"""Images from files for ``splitveil infer``: PNG/JPEG (via imageio) or NumPy ``.npy`` arrays.

numpy only, so the torch-free edge reads images exactly as the toolkit does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from splitveil.errors import ConfigError, SplitveilError


def load_images(paths: list[Path], input_shape: tuple[int, int, int]) -> tuple[np.ndarray, list[str]]:
    """The files at ``paths`` as one ``(N, C, H, W)`` float32 array in [0, 1] matching ``input_shape``,
    and a name for each image (the file, with an index for the images of a batch file).

    A ``.npy`` file may hold one image (``H, W`` or ``C, H, W``) or a batch (``N, C, H, W``);
    integer arrays are read as 0..255. Colour images are averaged to grey for one-channel models.
    """
    batches = [_read(path, input_shape) for path in paths]
    names = [
        str(path) if len(batch) == 1 else f"{path}[{i}]"
        for path, batch in zip(paths, batches, strict=True)
        for i in range(len(batch))
    ]
    return (np.concatenate(batches) if batches else np.empty((0, *input_shape), np.float32)), names


def _read(path: Path, input_shape: tuple[int, int, int]) -> np.ndarray:
    if not path.is_file():
        raise ConfigError(f"image {path} does not exist")
    if path.suffix.lower() == ".npy":
        array = _read_npy(path)
    else:
        try:
            import imageio.v3 as iio
        except ImportError:
            raise ConfigError(
                f"reading {path} needs imageio (pip install imageio); or give the pixels as a .npy array"
            ) from None
        try:
            array = iio.imread(path)
        except Exception as exc:  # imageio raises many types for unreadable files
            raise ConfigError(f"cannot read image {path}: {exc}") from None
        if array.ndim == 3:
            array = np.moveaxis(array[..., :3], -1, 0)  # H, W, RGB(A) -> C, H, W
    if array.size == 0:
        raise ConfigError(f"{path} holds no images (shape {array.shape}); pass a file with at least one")
    integers = array.dtype.kind in "iu"
    values = array.astype(np.float32) / 255 if integers else array.astype(np.float32)
    while values.ndim < 4:
        values = values[np.newaxis]
    channels, height, width = input_shape
    if values.shape[1] != channels and channels == 1:
        values = values.mean(axis=1, keepdims=True)
    if tuple(values.shape[1:]) != input_shape:
        raise ConfigError(
            f"{path}: image of shape {tuple(values.shape[1:])} (C, H, W), but the model takes {input_shape}; resize it first"
        )
    if values.min() < 0 or values.max() > 1:
        raise ConfigError(f"{path}: pixel values must lie in [0, 1] (floats) or 0..255 (integers)")
    return values


#: Array kinds that are pixels: signed and unsigned integers (0..255) and floats ([0, 1]). Booleans,
#: complex numbers, strings and objects are not images, whatever their shape.
PIXEL_KINDS = frozenset("iuf")


def _read_npy(path: Path) -> np.ndarray:
    """The array in ``path``, after its header has been checked: a pixel dtype, and no more data
    declared than the file holds (a header declaring 10^12 images must not allocate them)."""
    try:
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(handle)
            data_offset = handle.tell()
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path} is not a NumPy .npy file ({exc}); save arrays with numpy.save") from None
    if dtype.kind not in PIXEL_KINDS:
        raise ConfigError(f"{path} holds {dtype} values, not pixels; save integers (0..255) or floats in [0, 1]")
    declared = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize
    available = path.stat().st_size - data_offset
    if declared > available:
        raise ConfigError(
            f"{path} declares {shape} {dtype} values ({declared:,} bytes) but holds {available:,}; it is truncated"
        )
    return np.load(path, allow_pickle=False)


def read_image_files(paths: list[Path], input_shape: tuple[int, int, int]) -> tuple[np.ndarray, list[str]]:
    """``load_images`` one file at a time, so that an unreadable file is refused by name, and an
    empty batch is refused instead of classifying nothing."""
    batches, names = [], []
    for path in paths:
        try:
            batch, batch_names = load_images([path], input_shape)
        except SplitveilError:
            raise
        except (ValueError, TypeError, RuntimeError, OSError, EOFError, MemoryError) as exc:
            # numpy and imageio raise all of these for truncated, pickled or lying files.
            problem = " ".join(str(exc).split())
            raise ConfigError(
                f"cannot read {path} ({problem}); give PNG/JPEG images or a .npy array of numbers written by numpy.save"
            ) from None
        batches.append(batch)
        names += batch_names
    if not names:
        raise ConfigError(f"{', '.join(map(str, paths))} hold no images; give at least one image to classify")
    return np.concatenate(batches), names
