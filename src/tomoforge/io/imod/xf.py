"""IMOD 2D transform files (``.xf``, ``.prexf``, ``.prexg``) and their conversion to :class:`TiltTransform`.

A line ``A11 A12 A21 A22 DX DY`` maps raw image coordinates to aligned ones about IMOD's centres ``(N − 1)/2``:
``x' − c_out = A·(x − c_in) + d`` (CONVENTIONS.md §6). :func:`read_xf` / :func:`write_xf` keep IMOD's own numbers
(shifts in pixels about IMOD centres); :func:`xf_to_transforms` and :func:`transforms_to_xf` convert to and from
tomoforge's :class:`~tomoforge.models.TiltTransform` (centres ``N // 2``, shifts in Å) with
:func:`tomoforge.geometry.imod_to_tomoforge_xf_shift_px` and its inverse.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tomoforge.geometry import imod_to_tomoforge_xf_shift_px, tomoforge_to_imod_xf_shift_px
from tomoforge.io._atomic import write_text_atomic
from tomoforge.io._text import format_fixed, join_fixed, parse_float, read_text, token_lines
from tomoforge.io.errors import FormatError
from tomoforge.models import TiltTransform

__all__ = [
    "chain_relative_xf",
    "compose_xf",
    "read_xf",
    "transforms_to_xf",
    "write_xf",
    "xf_to_transforms",
]

_WIDTH = 12
_MATRIX_DECIMALS = 7  # IMOD writes %12.7f for A11..A22 ...
_SHIFT_DECIMALS = 3  # ... and %12.3f for DX, DY


def read_xf(path: str | Path) -> np.ndarray:
    """Read an IMOD transform file.

    Parameters
    ----------
    path
        ``.xf``, ``.prexf``, ``.prexg`` (or any file of ``A11 A12 A21 A22 DX DY`` lines); blank lines are skipped.

    Returns
    -------
    numpy.ndarray
        float64 array ``(n, 2, 3)``: ``[[A11, A12, DX], [A21, A22, DY]]`` per view, IMOD's numbers unchanged (shifts
        in pixels of the transformed images, about IMOD centres).

    Raises
    ------
    FormatError
        When a line does not hold exactly six numbers or the file has no transform at all.
    """
    rows: list[list[float]] = []
    for lineno, tokens in token_lines(read_text(path)):
        if len(tokens) != 6:
            raise FormatError(
                path,
                f"line {lineno} has {len(tokens)} values; an IMOD transform line has 6 (A11 A12 A21 A22 DX DY)",
            )
        rows.append([parse_float(t, path, f"line {lineno}") for t in tokens])
    if not rows:
        raise FormatError(path, "holds no transform lines (A11 A12 A21 A22 DX DY)")
    values = np.asarray(rows, dtype=np.float64)
    out = np.empty((len(rows), 2, 3), dtype=np.float64)
    out[:, 0, :] = values[:, [0, 1, 4]]
    out[:, 1, :] = values[:, [2, 3, 5]]
    return out


def write_xf(xf: np.ndarray, path: str | Path) -> Path:
    """Write transforms in IMOD's layout, ``%12.7f`` four times then ``%12.3f`` twice per line.

    A value that has a few more digits than that layout keeps them (IMOD reads the numbers free-format), so
    numbers read by :func:`read_xf` are written back unchanged; files written by IMOD come out byte-identical.

    Parameters
    ----------
    xf
        ``(n, 2, 3)`` array as returned by :func:`read_xf`.
    path
        Destination; written atomically.

    Returns
    -------
    pathlib.Path
        The destination path.
    """
    arr = _check_xf(xf, path)
    lines = []
    for m in arr:
        tokens = [
            format_fixed(float(v), _WIDTH, _MATRIX_DECIMALS) for v in (m[0, 0], m[0, 1], m[1, 0], m[1, 1])
        ]
        tokens += [format_fixed(float(v), _WIDTH, _SHIFT_DECIMALS) for v in (m[0, 2], m[1, 2])]
        lines.append(join_fixed(tokens) + "\n")
    return write_text_atomic(path, "".join(lines))


def _check_xf(xf: np.ndarray, path: str | Path) -> np.ndarray:
    arr = np.asarray(xf, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (2, 3) or arr.shape[0] == 0:
        raise FormatError(path, f"transforms to write must have shape (n, 2, 3) with n >= 1, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise FormatError(path, "transforms to write contain NaN or infinite values")
    return arr


def xf_to_transforms(
    xf: np.ndarray,
    pixel_size_angstrom: float,
    image_size_xy: Sequence[int],
    aligned_size_xy: Sequence[int] | None = None,
) -> list[TiltTransform]:
    """Convert IMOD transforms to tomoforge transforms (centres ``N // 2``, shifts in Å).

    Parameters
    ----------
    xf
        ``(n, 2, 3)`` IMOD transforms (:func:`read_xf`).
    pixel_size_angstrom
        Pixel size in Å of the images the transforms were computed for.
    image_size_xy
        ``(nx, ny)`` of the raw (input) images.
    aligned_size_xy
        ``(nx, ny)`` of the aligned (output) images; the raw size when omitted.

    Returns
    -------
    list of TiltTransform
        One per view, with ``d' = d + A·δ_in − δ_out``, ``δ = N//2 − (N − 1)/2`` (CONVENTIONS.md §6), in Å.
    """
    arr = np.asarray(xf, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (2, 3):
        raise ValueError(f"expected IMOD transforms of shape (n, 2, 3), got {arr.shape}")
    a = torch.from_numpy(np.ascontiguousarray(arr[:, :, :2]))
    d = torch.from_numpy(np.ascontiguousarray(arr[:, :, 2]))
    shifts_px = imod_to_tomoforge_xf_shift_px(a, d, tuple(image_size_xy), _size(aligned_size_xy)).numpy()
    return [
        TiltTransform(
            a11=float(m[0, 0]),
            a12=float(m[0, 1]),
            a21=float(m[1, 0]),
            a22=float(m[1, 1]),
            dx_angstrom=float(s[0]) * pixel_size_angstrom,
            dy_angstrom=float(s[1]) * pixel_size_angstrom,
        )
        for m, s in zip(arr, shifts_px, strict=True)
    ]


def transforms_to_xf(
    transforms: Sequence[TiltTransform],
    pixel_size_angstrom: float,
    image_size_xy: Sequence[int],
    aligned_size_xy: Sequence[int] | None = None,
) -> np.ndarray:
    """Convert tomoforge transforms back to IMOD numbers (the inverse of :func:`xf_to_transforms`).

    Parameters
    ----------
    transforms
        One :class:`TiltTransform` per view.
    pixel_size_angstrom
        Pixel size in Å of the images the IMOD file will be used with.
    image_size_xy, aligned_size_xy
        ``(nx, ny)`` of the raw and aligned images (aligned defaults to raw).

    Returns
    -------
    numpy.ndarray
        ``(n, 2, 3)`` IMOD transforms, shifts in pixels about IMOD centres.
    """
    if not transforms:
        return np.zeros((0, 2, 3))
    mats = np.stack([t.as_matrix(pixel_size_angstrom)[:2] for t in transforms])
    a = torch.from_numpy(np.ascontiguousarray(mats[:, :, :2]))
    d = torch.from_numpy(np.ascontiguousarray(mats[:, :, 2]))
    mats[:, :, 2] = tomoforge_to_imod_xf_shift_px(a, d, tuple(image_size_xy), _size(aligned_size_xy)).numpy()
    return mats


def _size(size_xy: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if size_xy is None else tuple(size_xy)


def _homogeneous(xf: np.ndarray) -> np.ndarray:
    arr = np.asarray(xf, dtype=np.float64)
    out = np.zeros((*arr.shape[:-2], 3, 3))
    out[..., :2, :] = arr
    out[..., 2, 2] = 1.0
    return out


def compose_xf(earlier: np.ndarray, later: np.ndarray) -> np.ndarray:
    """Compose IMOD transforms view by view: apply ``earlier`` first, then ``later`` (``M = M_later @ M_earlier``).

    This is how a coarse ``.prexg`` and the fiducial ``.xf`` of tiltalign combine into the full alignment
    (``xfproduct prexg fid.xf``); both must refer to images of the same size, so the IMOD centres agree.

    Parameters
    ----------
    earlier, later
        ``(n, 2, 3)`` transforms (or ``(2, 3)`` for one view).

    Returns
    -------
    numpy.ndarray
        The composed transforms, same shape.
    """
    first, second = _homogeneous(earlier), _homogeneous(later)
    if first.shape != second.shape:
        raise ValueError(
            f"cannot compose transforms of shapes {first.shape[:-2]} and {second.shape[:-2]} views"
        )
    return (second @ first)[..., :2, :]


def chain_relative_xf(relative: np.ndarray, reference_index: int) -> np.ndarray:
    """Chain relative (``f``) transforms into global (``g``) ones, like ``xftoxg -NumberToFit 0 -ReferenceSection``.

    Row ``i`` of a ``.prexf`` from tiltxcorr maps view ``i`` onto view ``i − 1`` (row 0 is not used). The global
    transform of view ``i`` maps it onto the reference view, whose own transform is the identity:
    ``g_i = g_{i−1} @ f_i`` above the reference and ``g_i = g_{i+1} @ f_{i+1}⁻¹`` below it. With the zero-tilt view
    as reference this gives the ``.prexg`` of coarse alignment (tutorial-steps.md §5).

    Parameters
    ----------
    relative
        ``(n, 2, 3)`` relative transforms in IMOD numbers.
    reference_index
        0-based index of the view everything is aligned to (usually the view nearest zero tilt).

    Returns
    -------
    numpy.ndarray
        ``(n, 2, 3)`` global transforms.
    """
    f = _homogeneous(relative)
    if f.ndim != 3:
        raise ValueError(f"expected relative transforms of shape (n, 2, 3), got {np.shape(relative)}")
    n = f.shape[0]
    if not 0 <= reference_index < n:
        raise ValueError(f"reference_index {reference_index} is outside 0..{n - 1}")
    g = np.empty_like(f)
    g[reference_index] = np.eye(3)
    for i in range(reference_index + 1, n):
        g[i] = g[i - 1] @ f[i]
    for i in range(reference_index - 1, -1, -1):
        g[i] = g[i + 1] @ np.linalg.inv(f[i + 1])
    return g[:, :2, :]
