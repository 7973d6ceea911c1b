"""Writing MRC files: lossless mode choice, atomic whole-array writes and a streaming section writer."""

from __future__ import annotations

import contextlib
import mmap
import os
from pathlib import Path
from types import TracebackType
from typing import Any

import mrcfile
import numpy as np

from tomoforge.io._atomic import commit_temp_file, discard_temp_file, new_temp_file
from tomoforge.io.errors import FormatError
from tomoforge.io.mrc.reading import MODES, MrcVolume, problem_text

__all__ = ["MrcWriter", "mrc_mode_for", "write_mrc"]

_COMPLEX_PROBLEM = (
    "complex data cannot be written to MRC (modes 3 and 4 are not supported); write the real and imaginary "
    "parts, or the amplitudes, as separate float32 files"
)


def _fits(values: np.ndarray, dtype: np.dtype[Any]) -> bool:
    if values.size == 0:
        return True
    info = np.iinfo(dtype)
    return bool(values.min() >= info.min and values.max() <= info.max)


def mrc_mode_for(data: np.ndarray) -> int:
    """The MRC mode that stores ``data`` without loss (or as float32 for float64).

    float32 and float64 → 2, float16 → 12, int8 and bool → 0, int16 → 1, uint16 → 6; other integer types take
    the first of mode 0 (int8), 6 (uint16) and 1 (int16) that holds their values, so ``uint8`` counts up to
    127 become mode 0.

    Raises
    ------
    ValueError
        For complex data, or integers outside the int16 and uint16 ranges.
    """
    dtype = np.dtype(data.dtype)
    fixed = {"f4": 2, "f8": 2, "f2": 12, "i1": 0, "b1": 0, "i2": 1, "u2": 6}
    key = f"{dtype.kind}{dtype.itemsize}"
    if key in fixed:
        return fixed[key]
    if dtype.kind == "c":
        raise ValueError(_COMPLEX_PROBLEM)
    if dtype.kind in "iu":
        for mode in (0, 6, 1):
            if _fits(data, np.dtype(MODES[mode])):
                return mode
        raise ValueError(
            f"integer values from {data.min()} to {data.max()} fit no MRC integer mode "
            "(int8, int16 or uint16); convert them to float32"
        )
    raise ValueError(f"data of dtype {dtype} have no MRC mode")


def _cast(data: np.ndarray, mode: int) -> np.ndarray:
    """Convert ``data`` to the dtype of ``mode``, refusing values the mode cannot hold."""
    target = np.dtype(MODES[mode])
    if data.dtype == target:
        return data
    if data.dtype.kind == "c":
        raise ValueError(_COMPLEX_PROBLEM)
    if target.kind in "iu":
        if data.dtype.kind == "f" and data.size and not np.all(np.isfinite(data)):
            raise ValueError(f"NaN or infinite values cannot be written as MRC mode {mode} ({target})")
        if not _fits(data, target):
            raise ValueError(
                f"values from {data.min()} to {data.max()} do not fit MRC mode {mode} ({target})"
            )
        return (np.rint(data) if data.dtype.kind == "f" else data).astype(target)
    if target == np.float16 and data.size and np.nanmax(np.abs(data)) > np.finfo(np.float16).max:
        raise ValueError("values exceed the float16 range of MRC mode 12")
    return data.astype(target)


def _section_stats(block: np.ndarray) -> np.ndarray:
    """``(4, sections)``: min, max, sum and sum of squares of each section, accumulated in float64 without a
    float64 copy of the data."""
    flat = block.reshape(block.shape[0], -1)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.stack(
            [
                flat.min(1).astype(np.float64),
                flat.max(1).astype(np.float64),
                flat.sum(1, dtype=np.float64),
                np.einsum("ij,ij->i", flat, flat, dtype=np.float64, casting="unsafe"),
            ]
        )


class MrcWriter:
    """Write a large MRC file section range by section range, atomically.

    The file is pre-allocated with :func:`mrcfile.new_mmap` under a temporary name in the destination folder
    and renamed over ``path`` only by a successful :meth:`close` (or the end of a ``with`` block without an
    exception). After an exception, or :meth:`abort`, the temporary file is removed and whatever was at
    ``path`` before is untouched. Sections never written read as zeros. Header statistics (min, max, mean,
    rms) are gathered from the written sections as they arrive.

    Parameters
    ----------
    path
        Destination file.
    shape
        ``(z, y, x)``, ``(n, y, x)`` or ``(y, x)``.
    voxel_size_angstrom
        One size, or ``(x, y, z)``, in Å.
    origin_angstrom
        Header origin ``(x, y, z)`` in Å (see the module notes); zeros when None.
    mode
        MRC mode: 2 (float32, default), 12, 0, 1 or 6.
    is_stack
        Mark 3D data as a stack of images (space group 0) instead of a volume.

    Examples
    --------
    >>> with MrcWriter("tomo.mrc", (300, 1000, 1000), voxel_size_angstrom=10.0) as out:  # doctest: +SKIP
    ...     for start in range(0, 300, 50):
    ...         out.write(reconstruct_slab(start, start + 50), start)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        shape: tuple[int, ...],
        voxel_size_angstrom: float | tuple[float, float, float],
        origin_angstrom: tuple[float, float, float] | None = None,
        mode: int = 2,
        is_stack: bool = False,
    ) -> None:
        self.path = Path(path)
        shape = tuple(int(n) for n in shape)
        if len(shape) not in (2, 3) or min(shape) <= 0:
            raise FormatError(self.path, f"cannot hold an array of shape {shape}; MRC takes 2D or 3D data")
        if mode not in MODES:
            raise FormatError(self.path, f"cannot be written in MRC mode {mode}; use 0, 1, 2, 6 or 12")
        if isinstance(voxel_size_angstrom, (int, float, np.integer, np.floating)):
            voxel_xyz: tuple[float, ...] = (float(voxel_size_angstrom),) * 3
        else:
            voxel_xyz = tuple(float(v) for v in voxel_size_angstrom)
        origin_xyz = tuple(float(v) for v in (origin_angstrom or (0.0, 0.0, 0.0)))
        if len(voxel_xyz) != 3 or not all(np.isfinite(voxel_xyz)) or min(voxel_xyz) < 0:
            raise FormatError(self.path, f"cannot be written with voxel size {voxel_size_angstrom} Å")
        if len(origin_xyz) != 3 or not all(np.isfinite(origin_xyz)):
            raise FormatError(self.path, f"cannot be written with origin {origin_angstrom} Å")
        self.shape = shape
        self.mode = mode
        self._sections = shape[0] if len(shape) == 3 else 1
        self._stats = np.zeros((4, self._sections))  # min, max, sum, sum of squares per section
        self._block_counts: np.ndarray | None = None  # elements written per section by write_rows
        tmp = new_temp_file(self.path)
        self._tmp: Path | None = tmp
        try:
            self._mrc = mrcfile.new_mmap(tmp, shape, mrc_mode=mode, overwrite=True)
            if len(shape) == 3 and is_stack:
                self._mrc.set_image_stack()
            elif len(shape) == 3:
                self._mrc.header.ispg = 1
                self._mrc.header.mz = shape[0]
            self._mrc.voxel_size = voxel_xyz
            self._mrc.header.origin = origin_xyz
            self._mrc.header.label[0] = b"tomoforge"
            self._mrc.header.nlabl = 1
            self._data = self._mrc.data.reshape(self._sections, shape[-2], shape[-1])
        except BaseException:
            self._discard()
            raise

    def write(self, data: np.ndarray, start: int = 0) -> None:
        """Write sections ``start`` to ``start + len(data)`` (a 2D array is one section).

        Raises
        ------
        FormatError
            When the data do not fit the file's shape or mode.
        """
        block = self._incoming(data)
        block = block[np.newaxis] if block.ndim == 2 else block
        stop = start + block.shape[0]
        if block.ndim != 3 or block.shape[1:] != self._data.shape[1:] or start < 0 or stop > self._sections:
            raise FormatError(
                self.path,
                f"cannot take data of shape {np.shape(data)} at section {start} in a file of shape {self.shape}",
            )
        block = self._cast(block)
        if block.shape[0] == 0:
            return
        self._data[start:stop] = block
        self._release_pages()
        self._stats[:, start:stop] = _section_stats(block)

    def _incoming(self, data: np.ndarray) -> np.ndarray:
        if self._tmp is None:
            raise FormatError(self.path, "is already closed; write before closing the writer")
        return np.asarray(data)

    def _cast(self, block: np.ndarray) -> np.ndarray:
        try:
            return _cast(block, self.mode)
        except ValueError as exc:
            raise FormatError(self.path, f"cannot be written: {problem_text(exc)}") from exc

    def write_rows(self, data: np.ndarray, start_row: int) -> None:
        """Write rows ``start_row … start_row + r − 1`` of every section: ``data`` is ``(sections, r, x)``.

        For volumes made slab by slab along y (a tomogram reconstructed from tilt-series rows). Each row range
        must be written once; statistics accumulate over the calls. Do not mix with :meth:`write`.

        Raises
        ------
        FormatError
            When the data do not fit the file's shape or mode.
        """
        block = self._incoming(data)
        block = block[np.newaxis] if block.ndim == 2 and self._sections == 1 else block
        stop = start_row + (block.shape[1] if block.ndim == 3 else 0)
        if (
            block.ndim != 3
            or block.shape[0] != self._sections
            or block.shape[2] != self._data.shape[2]
            or start_row < 0
            or stop > self._data.shape[1]
        ):
            raise FormatError(
                self.path,
                f"cannot take rows of shape {np.shape(data)} at row {start_row} in a file of shape {self.shape}",
            )
        block = self._cast(block)
        if block.shape[1] == 0:
            return
        self._data[:, start_row:stop] = block
        self._release_pages()
        stats = _section_stats(block)
        if self._block_counts is None:
            self._block_counts = np.zeros(self._sections, dtype=np.int64)
            self._stats[0], self._stats[1] = np.inf, -np.inf
        with np.errstate(invalid="ignore", over="ignore"):
            self._stats[0] = np.minimum(self._stats[0], stats[0])
            self._stats[1] = np.maximum(self._stats[1], stats[1])
            self._stats[2:] += stats[2:]
        self._block_counts += block[0].size

    def _release_pages(self) -> None:
        """Write the mapped pages to the file and drop them from this process's memory.

        Without this every written page stays mapped and counts in the process's resident memory, so writing a
        stack image by image or a volume slab by slab would hold all of it; afterwards the pages live in the file
        (and the kernel's page cache) only. Best effort: skipped where ``madvise`` is not available.
        """
        mapping = getattr(self._mrc.data, "_mmap", None)
        if mapping is None or not hasattr(mapping, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        mapping.flush()
        mapping.madvise(mmap.MADV_DONTNEED)

    def close(self) -> Path:
        """Finish the header, flush, and move the file to its destination; return the destination."""
        if self._tmp is None:
            return self.path
        count = self._data[0].size * self._sections
        if self._block_counts is not None:  # rows never written read as zeros
            partial = self._block_counts < self._data[0].size
            self._stats[0, partial] = np.minimum(self._stats[0, partial], 0.0)
            self._stats[1, partial] = np.maximum(self._stats[1, partial], 0.0)
        header = self._mrc.header
        with np.errstate(invalid="ignore", over="ignore"):  # NaN or inf data give NaN or inf statistics
            mean = self._stats[2].sum() / count
            header.dmin, header.dmax, header.dmean = self._stats[0].min(), self._stats[1].max(), mean
            header.rms = np.sqrt(np.maximum(self._stats[3].sum() / count - mean**2, 0.0))
        tmp = self._tmp
        try:
            self._mrc.close()
            commit_temp_file(tmp, self.path)
        except BaseException:
            self._discard()
            raise
        self._tmp = None
        return self.path

    def abort(self) -> None:
        """Abandon the file: remove the temporary file and leave ``path`` as it was."""
        self._discard()

    def _discard(self) -> None:
        if self._tmp is None:
            return
        mrc = getattr(self, "_mrc", None)
        if mrc is not None:
            with contextlib.suppress(Exception):
                mrc.close()
        discard_temp_file(self._tmp)
        self._tmp = None

    def __enter__(self) -> MrcWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._discard()


def write_mrc(
    data: np.ndarray | MrcVolume,
    path: str | os.PathLike[str],
    voxel_size_angstrom: float | tuple[float, float, float] | None = None,
    origin_angstrom: tuple[float, float, float] | None = None,
    mode: int | None = None,
    is_stack: bool | None = None,
) -> Path:
    """Write an image, stack or volume to an MRC file atomically.

    Parameters
    ----------
    data
        ``(z, y, x)``, ``(n, y, x)`` or ``(y, x)`` array, or an :class:`MrcVolume` (whose voxel size, origin and
        stack flag are the defaults).
    path
        Destination; a previous file there is replaced only once the new one is complete.
    voxel_size_angstrom
        One size or ``(x, y, z)`` in Å; required for a plain array.
    origin_angstrom
        Header origin ``(x, y, z)`` in Å; zeros when None.
    mode
        MRC mode; None picks it from the data with :func:`mrc_mode_for` (float32 → 2, float16 → 12,
        int8 → 0, int16 → 1, uint16 → 6).
    is_stack
        Mark 3D data as a stack of images rather than a volume (default False).

    Returns
    -------
    pathlib.Path
        The destination.

    Raises
    ------
    FormatError
        For complex data, values that do not fit the mode, or a missing voxel size.
    """
    target = Path(path)
    if isinstance(data, MrcVolume):
        voxel_size_angstrom = data.voxel_size_angstrom if voxel_size_angstrom is None else voxel_size_angstrom
        origin_angstrom = data.origin_angstrom if origin_angstrom is None else origin_angstrom
        is_stack = data.is_stack if is_stack is None else is_stack
        data = data.data
    if voxel_size_angstrom is None:
        raise FormatError(target, "cannot be written without a voxel size (voxel_size_angstrom)")
    array = np.asarray(data)
    try:
        chosen = mrc_mode_for(array) if mode is None else mode
    except ValueError as exc:
        raise FormatError(target, f"cannot be written: {problem_text(exc)}") from exc
    with MrcWriter(target, array.shape, voxel_size_angstrom, origin_angstrom, chosen, bool(is_stack)) as out:
        out.write(array, 0)
    return target
