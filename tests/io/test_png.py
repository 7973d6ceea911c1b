"""The PNG writer: decoded with the standard library, pixels come back as written (grayscale and RGB)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from tomoforge.io.errors import FormatError
from tomoforge.io.png import png_bytes, write_png


def decode(data: bytes) -> tuple[int, np.ndarray]:
    """Colour type and rows (top row first, as stored) of a PNG written with filter 0."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks[kind] = body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8
    channels = 3 if colour == 2 else 1
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(height, -1)
    assert (raw[:, 0] == 0).all()
    return colour, raw[:, 1:].reshape(height, width, channels).squeeze(-1 if channels == 1 else ())


def test_grayscale_round_trip_with_y_up() -> None:
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    colour, rows = decode(png_bytes(image))
    assert colour == 0
    np.testing.assert_array_equal(rows, image[::-1])  # row 0 is shown at the bottom
    np.testing.assert_array_equal(decode(png_bytes(image, origin="upper"))[1], image)


def test_rgb_round_trip(tmp_path) -> None:
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
