"""The PNG writer: decoded with the standard library, pixels come back as written (grayscale and RGB)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from tomoforge.io.errors import FormatError
from tomoforge.io.png import png_bytes, write_png


def test_grayscale_round_trip_with_y_up(png_decode: Callable[[bytes], tuple[int, np.ndarray]]) -> None:
    decode = png_decode
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    colour, rows = decode(png_bytes(image))
    assert colour == 0
    np.testing.assert_array_equal(rows, image[::-1])  # row 0 is shown at the bottom
    np.testing.assert_array_equal(decode(png_bytes(image, origin="upper"))[1], image)


def test_rgb_round_trip(tmp_path, png_decode: Callable[[bytes], tuple[int, np.ndarray]]) -> None:
    decode = png_decode
    image = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    path = write_png(image, tmp_path / "rgb.png")
    colour, rows = decode(path.read_bytes())
    assert colour == 2
    np.testing.assert_array_equal(rows, image[::-1])


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 2), np.uint8), np.zeros((0, 3), np.uint8)]
)
def test_bad_arrays_are_named(tmp_path, bad: np.ndarray) -> None:
    with pytest.raises(FormatError, match="bad.png.*uint8"):
        write_png(bad, tmp_path / "bad.png")
