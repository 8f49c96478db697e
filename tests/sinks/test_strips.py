"""stream.sinks.strips: PNG and .npy files written band by band read back as the whole picture."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stream.core.errors import SinkError
from stream.sinks.strips import NpyWriter, PngWriter


def _bands(image: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    edges = np.cumsum([0, *sizes])
    assert edges[-1] == image.shape[0]
    return [image[a:b] for a, b in zip(edges[:-1], edges[1:])]


@pytest.mark.parametrize("kind", ["bgr", "gray8", "gray16"])
@pytest.mark.parametrize("sizes", [[37], [1, 36], [10, 10, 10, 7]])
def test_png_written_in_bands_reads_back_exactly(tmp_path, kind, sizes):
    rng = np.random.default_rng(len(sizes))
    shape, dtype, channels, bits = {
        "bgr": ((37, 53, 3), np.uint8, 3, 8),
        "gray8": ((37, 53), np.uint8, 1, 8),
        "gray16": ((37, 53), np.uint16, 1, 16),
    }[kind]
    image = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype, endpoint=False)
    image[5:9] = image[4]  # rows equal to the one above: the Up filter's zeros
    path = tmp_path / "out.png"
    with PngWriter(path, (53, 37), channels=channels, bit_depth=bits) as png:
        for band in _bands(image, sizes):
            png.write(band)
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, image)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_npy_written_in_bands_loads_as_float32(tmp_path):
    depth = np.random.default_rng(0).random((20, 7)).astype(np.float32)
    with NpyWriter(tmp_path / "d.npy", (7, 20)) as npy:
        for band in _bands(depth, [3, 17]):
            npy.write(band)
    loaded = np.load(tmp_path / "d.npy")
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, depth)


def test_a_failure_midway_leaves_nothing(tmp_path):
    image = np.zeros((10, 4, 3), np.uint8)
    with pytest.raises(RuntimeError), PngWriter(tmp_path / "x.png", (4, 10)) as png:
        png.write(image[:5])
        raise RuntimeError("the depth computation failed")
    assert list(tmp_path.iterdir()) == []


def test_too_few_rows_is_an_error_and_leaves_nothing(tmp_path):
    png = PngWriter(tmp_path / "x.png", (4, 10), channels=1)
    png.write(np.zeros((9, 4), np.uint8))
    with pytest.raises(SinkError, match="9 of 10 rows"):
        png.close()
    assert list(tmp_path.iterdir()) == []


def test_wrong_rows_are_refused(tmp_path):
    with pytest.raises(ValueError), PngWriter(tmp_path / "x.png", (4, 10), channels=1) as png:
        png.write(np.zeros((3, 5), np.uint8))
    with pytest.raises(ValueError), PngWriter(tmp_path / "y.png", (4, 10), channels=1) as png:
        png.write(np.zeros((3, 4), np.uint16))
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_folder_is_one_sink_error(tmp_path):
    with pytest.raises(SinkError, match="missing"):
        PngWriter(tmp_path / "missing" / "x.png", (4, 4))
