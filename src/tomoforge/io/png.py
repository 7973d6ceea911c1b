"""8-bit grayscale or RGB PNG images (writer only), for previews; the standard library's ``zlib`` is the only dependency.

A PNG is the 8-byte signature followed by chunks (length, type, data, CRC-32 of type and data): ``IHDR`` (width,
height, bit depth 8, colour type 0 = grayscale or 2 = RGB, no interlace), one ``IDAT`` (the zlib-compressed rows, each
preceded by filter type 0) and ``IEND`` (W3C, Portable Network Graphics Specification, 2nd ed., 2003).

Array rows are written bottom row first by default (``origin="lower"``), so that a viewer shows the image as IMOD
and CONVENTIONS.md §1 do, with y pointing up.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from tomoforge.io._atomic import write_bytes_atomic
from tomoforge.io.errors import FormatError

__all__ = ["png_bytes", "write_png"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_bytes(
    image: np.ndarray, *, origin: Literal["lower", "upper"] = "lower", compression: int = 6
) -> bytes:
    """Encode a ``(y, x)`` uint8 image as an 8-bit grayscale PNG, or a ``(y, x, 3)`` one as RGB.

    Parameters
    ----------
    image
        ``(y, x)`` or ``(y, x, 3)`` ``uint8`` array.
    origin
        ``"lower"``: row 0 is shown at the bottom (y up, as IMOD); ``"upper"``: row 0 at the top.
    compression
        zlib level 0–9.

    Returns
    -------
    bytes
        The PNG file content.

    Raises
    ------
    ValueError
        If the image is not a non-empty 2D (or RGB) uint8 array.
    """
    array = np.asarray(image)
    rgb = array.ndim == 3 and array.shape[-1] == 3
    if not (array.ndim == 2 or rgb) or array.dtype != np.uint8 or array.size == 0:
        raise ValueError(
            f"a PNG needs a non-empty (y, x) or (y, x, 3) uint8 array, got {array.dtype} {array.shape}"
        )
    if origin not in ("lower", "upper"):
        raise ValueError(f"origin must be 'lower' or 'upper', not {origin!r}")
    rows = array[::-1] if origin == "lower" else array
    height, width = rows.shape[:2]
    flat = rows.reshape(height, -1)
    raw = np.empty((height, flat.shape[1] + 1), dtype=np.uint8)
    raw[:, 0] = 0  # filter type "None" for every row
    raw[:, 1:] = flat
    header = struct.pack(">IIBBBBB", width, height, 8, 2 if rgb else 0, 0, 0, 0)
    return (
        _SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw.tobytes(), compression))
        + _chunk(b"IEND", b"")
    )


def write_png(
    image: np.ndarray, path: str | os.PathLike[str], *, origin: Literal["lower", "upper"] = "lower"
) -> Path:
    """Write a ``(y, x)`` (grayscale) or ``(y, x, 3)`` (RGB) uint8 image as a PNG, atomically (see :func:`png_bytes`).

    Returns
    -------
    pathlib.Path
        The destination.

    Raises
    ------
    FormatError
        If the image is not a 2D or RGB uint8 array or the file cannot be written.
    """
    target = Path(path)
    try:
        data = png_bytes(image, origin=origin)
    except ValueError as exc:
        raise FormatError(target, f"cannot be written: {exc}") from None
    return write_bytes_atomic(target, data)
