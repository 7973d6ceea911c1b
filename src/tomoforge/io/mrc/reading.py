"""Reading MRC files: header checks with clear errors, lazy memory-mapped data, section ranges, NaN scans."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
from mrcfile.dtypes import HEADER_DTYPE
from mrcfile.utils import byte_order_from_machine_stamp

from tomoforge.io.errors import FormatError

__all__ = ["MrcVolume", "check_mrc_finite", "read_mrc", "read_mrc_array"]

_HEADER_BYTES = 1024
MODES: dict[int, type[np.generic]] = {
    0: np.int8,
    1: np.int16,
    2: np.float32,
    6: np.uint16,
    12: np.float16,
}
_UNSUPPORTED_MODES = {3: "complex 16-bit integers", 4: "complex 32-bit floats", 101: "packed 4-bit integers"}
_IMOD_STAMP = 1146047817  # IMOD's imodStamp at byte 152; imodFlags (byte 156) bit 0 set = signed bytes
_CHUNK_BYTES = 64 * 1024 * 1024
Xyz = tuple[float, float, float]


@dataclass(frozen=True, eq=False)
class MrcVolume:
    """An MRC file opened lazily: the data are memory-mapped, not read.

    Attributes
    ----------
    path
        The file.
    data
        Read-only :class:`numpy.memmap` (or a transposed view of one): ``(z, y, x)`` for a volume, ``(n, y, x)``
        for a stack, ``(y, x)`` for a single image. Values are in the file's dtype and byte order.
    voxel_size_angstrom
        Voxel size ``(x, y, z)`` in Å; 0 where the header leaves it unset.
    origin_angstrom
        The header's origin ``(x, y, z)`` in Å, as stored (see the module notes).
    is_stack
        Whether the header marks the data as a stack of 2D images (space group 0) rather than a volume.
    mode
        MRC mode of the file (0 int8 or uint8, 1 int16, 2 float32, 6 uint16, 12 float16).
    """

    path: Path
    data: np.ndarray
    voxel_size_angstrom: Xyz
    origin_angstrom: Xyz
    is_stack: bool
    mode: int

    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape, ``(z, y, x)``, ``(n, y, x)`` or ``(y, x)``."""
        return tuple(self.data.shape)

    @property
    def pixel_size_angstrom(self) -> float:
        """The one voxel size of the file in Å (x and y, and z for a volume), 0 when unset.

        Raises
        ------
        FormatError
            When the voxel is not cubic (square for an image or stack).
        """
        sizes = (
            self.voxel_size_angstrom[:2] if self.is_stack or self.data.ndim == 2 else self.voxel_size_angstrom
        )
        if not np.allclose(sizes, sizes[0], rtol=1e-4, atol=0.0):
            raise FormatError(self.path, f"has unequal voxel sizes {sizes} Å where one size is needed")
        return float(sizes[0])


def problem_text(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(exc).__name__


def _read_raw_header(path: Path) -> tuple[np.void, int]:
    """Read and check the 1024-byte header; return it (in the file's byte order) and the file size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            raw = handle.read(_HEADER_BYTES)
    except FileNotFoundError:
        raise FormatError(path, "file not found (expected an MRC file)") from None
    except OSError as exc:
        raise FormatError(path, f"cannot be read ({exc.strerror or problem_text(exc)})") from exc
    if len(raw) < _HEADER_BYTES:
        raise FormatError(
            path,
            f"is only {size} bytes long, shorter than the 1024-byte MRC header, so it is not an MRC file",
        )
    if raw[208:211] != b"MAP":
        raise FormatError(path, "has no 'MAP' identifier at byte 208, so it is not an MRC file or is corrupt")
    try:
        order = byte_order_from_machine_stamp(bytearray(raw[212:216]))
    except ValueError:
        raise FormatError(
            path, f"has an unknown machine stamp {raw[212:216].hex()}; the header is corrupt"
        ) from None
    header = np.frombuffer(raw, dtype=HEADER_DTYPE.newbyteorder(order))[0]
    return header, size


def _check_header(path: Path, header: np.void, file_size: int) -> None:
    dims = [int(header[name]) for name in ("nx", "ny", "nz")]
    if min(dims) <= 0:
        raise FormatError(
            path, f"has non-positive dimensions nx, ny, nz = {dims} in its header, which is corrupt"
        )
    mode = int(header["mode"])
    if mode not in MODES:
        kind = _UNSUPPORTED_MODES.get(mode)
        what = f"mode {mode} ({kind})" if kind else f"unknown mode {mode}"
        raise FormatError(path, f"holds {what}; tomoforge reads modes 0, 1, 2, 6 and 12")
    axes = [int(header[name]) for name in ("mapc", "mapr", "maps")]
    if sorted(axes) != [1, 2, 3]:
        raise FormatError(path, f"has axis order mapc, mapr, maps = {axes}, not a permutation of 1, 2, 3")
    ispg = int(header["ispg"])
    if 401 <= ispg <= 630:
        raise FormatError(path, f"is a stack of volumes (space group {ispg}), which tomoforge does not read")
    nsymbt = int(header["nsymbt"])
    if nsymbt < 0:
        raise FormatError(
            path, f"gives a negative extended-header size ({nsymbt} bytes); the header is corrupt"
        )
    data_bytes = dims[0] * dims[1] * dims[2] * np.dtype(MODES[mode]).itemsize
    if file_size < _HEADER_BYTES + nsymbt + data_bytes:
        raise FormatError(
            path,
            f"is truncated: its header describes {dims[0]}×{dims[1]}×{dims[2]} values of mode {mode} "
            f"({_HEADER_BYTES + nsymbt + data_bytes} bytes with headers) but the file has only {file_size} bytes",
        )


def _header_geometry(path: Path, header: np.void) -> tuple[Xyz, Xyz]:
    with np.errstate(invalid="ignore"):
        cell = np.array([header["cella"][axis] for axis in "xyz"], dtype=np.float64)
        origin = np.array([header["origin"][axis] for axis in "xyz"], dtype=np.float64)
    grid = [int(header[name]) for name in ("mx", "my", "mz")]
    if not np.all(np.isfinite(cell)) or np.any(cell < 0):
        raise FormatError(path, f"has an invalid cell size {cell.tolist()} Å in its header")
    if not np.all(np.isfinite(origin)):
        raise FormatError(path, f"has a non-finite origin {origin.tolist()} in its header")
    voxel = tuple(float(c / m) if m > 0 else 0.0 for c, m in zip(cell, grid, strict=True))
    return (voxel[0], voxel[1], voxel[2]), (float(origin[0]), float(origin[1]), float(origin[2]))


def _imod_unsigned_bytes(header: np.void) -> bool:
    extra = bytes(header["extra2"])
    order = header.dtype["nx"].byteorder
    stamp_flags = np.frombuffer(extra[40:48], dtype=np.dtype(np.int32).newbyteorder(order))
    return int(stamp_flags[0]) == _IMOD_STAMP and not int(stamp_flags[1]) & 1


def _to_zyx(data: np.ndarray, header: np.void) -> np.ndarray:
    """Transpose data stored with axes (sections, rows, columns) = (maps, mapr, mapc) into (z, y, x)."""
    axes = [int(header[name]) for name in ("maps", "mapr", "mapc")]  # axis of the file array: 1=x, 2=y, 3=z
    if axes == [3, 2, 1]:
        return data
    full = data.reshape(int(header["nz"]), int(header["ny"]), int(header["nx"]))
    moved = full.transpose([axes.index(3), axes.index(2), axes.index(1)])
    return moved[0] if data.ndim == 2 and moved.shape[0] == 1 else moved


def read_mrc(path: str | os.PathLike[str], *, check_finite: bool = False) -> MrcVolume:
    """Open an MRC image, stack or volume without reading its data (a read-only memory map).

    Parameters
    ----------
    path
        The MRC file (``.mrc``, ``.mrcs``, ``.map``, ``.st``, ``.ali``, ``.rec``).
    check_finite
        Also scan the data, chunk by chunk, for NaN or infinite values (see :func:`check_mrc_finite`).

    Returns
    -------
    MrcVolume
        Memory-mapped data with voxel size, origin, stack flag and mode.

    Raises
    ------
    FormatError
        When the file is missing, not an MRC file, has a corrupt header, is truncated, holds an unsupported
        mode, or (with ``check_finite``) holds NaN or infinite values.
    """
    source = Path(path)
    header, file_size = _read_raw_header(source)
    _check_header(source, header, file_size)
    voxel, origin = _header_geometry(source, header)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="MRC file is .* larger than expected")
            with mrcfile.mmap(source, mode="r", permissive=False) as mrc:
                data = mrc.data
    except (ValueError, OSError) as exc:
        raise FormatError(source, f"cannot be memory-mapped as MRC ({problem_text(exc)})") from exc
    if data is None:  # pragma: no cover - mrcfile raises instead when not permissive
        raise FormatError(source, "has a data block that mrcfile cannot map")
    mode = int(header["mode"])
    if mode == 0 and _imod_unsigned_bytes(header):
        data = data.view(np.uint8)
    data = _to_zyx(data, header)
    volume = MrcVolume(
        path=source,
        data=data,
        voxel_size_angstrom=voxel,
        origin_angstrom=origin,
        is_stack=int(header["ispg"]) == 0 and data.ndim == 3,
        mode=mode,
    )
    if check_finite:
        check_mrc_finite(volume)
    return volume


def read_mrc_array(path: str | os.PathLike[str], slices: slice | tuple[int, int] | None = None) -> np.ndarray:
    """Read an MRC file's data, or only a range of its sections, into memory.

    Parameters
    ----------
    path
        The MRC file.
    slices
        Sections (first axis, z or n) to read: a ``slice`` or a ``(start, stop)`` pair; None reads everything.

    Returns
    -------
    numpy.ndarray
        A new array in native byte order and the file's dtype.
    """
    data = read_mrc(path).data
    if slices is not None:
        if data.ndim == 2:
            data = data[np.newaxis]
        data = data[slices if isinstance(slices, slice) else slice(*slices)]
    return np.array(data, dtype=data.dtype.newbyteorder("="), order="C")


def check_mrc_finite(volume: MrcVolume | str | os.PathLike[str], chunk_bytes: int = _CHUNK_BYTES) -> None:
    """Check, a chunk of sections at a time, that a file holds no NaN or infinite values.

    Integer modes cannot hold them and return at once.

    Parameters
    ----------
    volume
        An opened file, or the path of one.
    chunk_bytes
        About how many bytes to scan at a time (whole sections, at least one).

    Raises
    ------
    FormatError
        Naming the first section (0-based) that holds a NaN or an infinite value.
    """
    vol = volume if isinstance(volume, MrcVolume) else read_mrc(volume)
    if vol.data.dtype.kind != "f":
        return
    data = vol.data if vol.data.ndim == 3 else vol.data[np.newaxis]
    step = max(1, chunk_bytes // max(1, data[0].nbytes))
    for start in range(0, data.shape[0], step):
        chunk = np.asarray(data[start : start + step])
        finite = np.isfinite(chunk).reshape(chunk.shape[0], -1).all(axis=1)
        if not finite.all():
            section = start + int(np.argmin(finite))
            raise FormatError(vol.path, f"holds NaN or infinite values in section {section} (0-based)")
