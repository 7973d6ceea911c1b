"""Movies of dose-fractionated frames: lazy frame readers for MRC and TIFF, gain and defect correction.

:func:`open_movie` returns a :class:`Movie` that reads frames on demand, so a tilt series of movies is never in
memory at once (``read_frames`` for a range, ``iter_chunks`` for a pass over all frames).

* MRC frame stacks (modes 0, 1, 2, 6, 12) are memory-mapped through :func:`tomoforge.io.mrc.read_mrc`; the
  pixel size comes from the header when it is set.
* TIFF movies (one frame per page) are read with the optional ``tifffile`` package. TIFF stores the top image
  row first while MRC stores the bottom row first, so frames are **flipped along y** when read, as IMOD,
  MotionCor2 and RELION do; gain references and MotionCor2's ``-RotGain``/``-FlipGain`` values then apply to
  TIFF and MRC movies alike. TIFF files carry no reliable pixel size (``pixel_size_angstrom`` is None).
* EER movies are not read here (the ``eerfile`` package on PyPI reads them); convert them to TIFF first.

Gain references follow MotionCor2 (and RELION's ``--gain_rot``/``--gain_flip``, which copy it): the gain is first
rotated by ``-RotGain`` × 90° **counter-clockwise as displayed with y up** (row 0 at the bottom, as IMOD shows it;
clockwise in viewers that put row 0 on top, such as ``relion_display``), then flipped: ``-FlipGain 1`` upside
down (about the horizontal axis, reversing y), ``-FlipGain 2`` left to right (reversing x). The corrected frames
are the raw frames multiplied by the transformed gain.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np

from tomoforge.io.errors import FormatError
from tomoforge.io.mrc import read_mrc, write_mrc
from tomoforge.io.mrc.reading import problem_text

__all__ = [
    "Movie",
    "apply_defects",
    "apply_gain",
    "gain_options_from_motioncor2",
    "open_movie",
    "transform_gain",
    "write_movie_mrc",
]

TIFF_MISSING = "reading TIFF movies needs the optional dependency tifffile: pip install tomoforge[tiff]"
_MRC_ENDINGS = (".mrc", ".mrcs", ".st")
_TIFF_ENDINGS = (".tif", ".tiff")
GainFlip = Literal["x", "y"] | None


class Movie:
    """A movie opened for reading frames on demand.

    Attributes
    ----------
    path
        The movie file.
    shape
        ``(n_frames, y, x)``.
    dtype
        Data type of the stored frames.
    pixel_size_angstrom
        Pixel size in Å from the file's header, or None when the file does not give one.
    """

    def __init__(
        self,
        path: Path,
        shape: tuple[int, int, int],
        dtype: np.dtype[Any],
        pixel_size_angstrom: float | None,
        read: Callable[[int, int], np.ndarray],
        close: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.shape = shape
        self.dtype = dtype
        self.pixel_size_angstrom = pixel_size_angstrom
        self._read = read
        self._close = close

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return self.shape[0]

    def __len__(self) -> int:
        return self.shape[0]

    def read_frames(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Read frames ``start`` to ``stop`` (exclusive; None for the last) as float32 ``(n, y, x)``."""
        stop = self.n_frames if stop is None else stop
        if not 0 <= start <= stop <= self.n_frames:
            raise IndexError(f"{self.path}: frames {start} to {stop} are outside 0 to {self.n_frames}")
        if start == stop:
            return np.zeros((0, *self.shape[1:]), dtype=np.float32)
        return self._read(start, stop)

    def iter_chunks(self, chunk_frames: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_frame, frames)`` for consecutive chunks of at most ``chunk_frames`` frames."""
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be at least 1, not {chunk_frames}")
        for start in range(0, self.n_frames, chunk_frames):
            yield start, self.read_frames(start, min(start + chunk_frames, self.n_frames))

    def close(self) -> None:
        """Release the file (reading again afterwards is an error for TIFF movies)."""
        if self._close is not None:
            self._close()

    def __enter__(self) -> Movie:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Movie({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"


def _open_mrc_movie(path: Path) -> Movie:
    volume = read_mrc(path)
    data = volume.data if volume.data.ndim == 3 else volume.data[np.newaxis]
    pixel = volume.voxel_size_angstrom[0]

    def read(start: int, stop: int) -> np.ndarray:
        return np.asarray(data[start:stop], dtype=np.float32)

    n, y, x = data.shape
    return Movie(path, (n, y, x), np.dtype(data.dtype.newbyteorder("=")), pixel if pixel > 0 else None, read)


def _open_tiff_movie(path: Path) -> Movie:
    try:
        import tifffile
    except ImportError:
        raise ImportError(TIFF_MISSING) from None
    try:
        tif = tifffile.TiffFile(path)
    except FileNotFoundError:
        raise FormatError(path, "file not found (expected a TIFF movie)") from None
    except Exception as exc:
        raise FormatError(path, f"is not a readable TIFF file ({problem_text(exc)})") from exc
    try:
        pages = list(tif.pages)
        shapes = {tuple(page.shape) for page in pages}
        dtypes = {np.dtype(page.dtype) for page in pages}
        if not pages or len(shapes) != 1 or len(next(iter(shapes))) != 2 or len(dtypes) != 1:
            raise FormatError(
                path,
                f"has pages of shapes {sorted(shapes)}, not one 2D frame of the same size and type per page",
            )
        y, x = next(iter(shapes))
        dtype = dtypes.pop()
    except FormatError:
        tif.close()
        raise
    except Exception as exc:
        tif.close()
        raise FormatError(path, f"is not a readable TIFF movie ({problem_text(exc)})") from exc

    def read(start: int, stop: int) -> np.ndarray:
        frames = np.empty((stop - start, y, x), dtype=np.float32)
        for i in range(start, stop):
            try:
                page = pages[i].asarray()
            except Exception as exc:
                hint = (
                    "; compressed TIFF may need the imagecodecs package" if "imagecodecs" in str(exc) else ""
                )
                raise FormatError(path, f"frame {i} cannot be decoded ({problem_text(exc)}{hint})") from exc
            frames[i - start] = page[::-1, :]
        return frames

    return Movie(path, (len(pages), y, x), dtype, None, read, tif.close)


def open_movie(path: str | os.PathLike[str]) -> Movie:
    """Open a movie of frames for lazy reading.

    Parameters
    ----------
    path
        An MRC frame stack (``.mrc``, ``.mrcs``) or a multi-page TIFF (``.tif``, ``.tiff``).

    Returns
    -------
    Movie
        The opened movie; use it as a context manager (or call ``close``) to release TIFF files.

    Raises
    ------
    FormatError
        For a bad file, an EER movie, or an unknown extension.
    ImportError
        For a TIFF movie when ``tifffile`` is not installed.
    """
    source = Path(path)
    name = source.name.lower()
    if name.endswith(_MRC_ENDINGS):
        return _open_mrc_movie(source)
    if name.endswith(_TIFF_ENDINGS):
        return _open_tiff_movie(source)
    if name.endswith(".eer"):
        raise FormatError(
            source, "is an EER movie, which tomoforge does not read yet; convert it to TIFF first"
        )
    raise FormatError(source, "is not a known movie type; expected .mrc, .mrcs, .tif or .tiff")


def write_movie_mrc(frames: np.ndarray, path: str | os.PathLike[str], pixel_size_angstrom: float) -> Path:
    """Write frames ``(n, y, x)`` as an MRC frame stack, atomically.

    Integer counts are stored in the smallest mode that holds them (mode 0 for counts up to 127, else 6, or 1
    for negative values), float16 as mode 12 and other floats as mode 2 (float32).

    Raises
    ------
    FormatError
        When ``frames`` is not 3D or holds values no MRC mode stores.
    """
    array = np.asarray(frames)
    if array.ndim != 3:
        raise FormatError(
            Path(path), f"cannot hold frames of shape {array.shape}; a movie is (n_frames, y, x)"
        )
    return write_mrc(array, path, voxel_size_angstrom=pixel_size_angstrom, is_stack=True)


def gain_options_from_motioncor2(rot_gain: int = 0, flip_gain: int = 0) -> tuple[int, GainFlip]:
    """Translate MotionCor2's ``-RotGain`` (0–3) and ``-FlipGain`` (0–2) into ``(rotation_deg, flip)``."""
    rotations = {0: 0, 1: 90, 2: 180, 3: 270}
    flips: dict[int, GainFlip] = {0: None, 1: "y", 2: "x"}
    if rot_gain not in rotations or flip_gain not in flips:
        raise ValueError(f"-RotGain must be 0 to 3 and -FlipGain 0 to 2, not {rot_gain} and {flip_gain}")
    return rotations[rot_gain], flips[flip_gain]


def transform_gain(gain: np.ndarray, rotation_deg: int = 0, flip: GainFlip = None) -> np.ndarray:
    """Rotate, then flip, a gain reference ``(y, x)`` the way MotionCor2's ``-RotGain``/``-FlipGain`` do.

    Parameters
    ----------
    gain
        Gain reference image.
    rotation_deg
        0, 90, 180 or 270: counter-clockwise with y up (row 0 at the bottom); 90 is ``-RotGain 1``.
    flip
        None; ``"y"`` to turn the image upside down (reverse rows, ``-FlipGain 1``); ``"x"`` to mirror it left to
        right (reverse columns, ``-FlipGain 2``). Applied after the rotation.
    """
    turns = {0: 0, 90: -1, 180: 2, 270: 1}  # np.rot90 turns counter-clockwise as displayed with row 0 on top
    if rotation_deg not in turns:
        raise ValueError(f"gain rotation must be 0, 90, 180 or 270 degrees, not {rotation_deg}")
    if flip not in (None, "x", "y"):
        raise ValueError(f"gain flip must be None, 'x' or 'y', not {flip!r}")
    out = np.rot90(np.asarray(gain), turns[rotation_deg])
    if flip == "y":
        out = out[::-1, :]
    elif flip == "x":
        out = out[:, ::-1]
    return out


def apply_gain(
    frames: np.ndarray, gain: np.ndarray, rotation_deg: int = 0, flip: GainFlip = None
) -> np.ndarray:
    """Multiply frames ``(..., y, x)`` by a gain reference after :func:`transform_gain`; return float32."""
    ref = transform_gain(gain, rotation_deg, flip)
    if ref.shape != np.shape(frames)[-2:]:
        raise ValueError(
            f"gain reference of shape {np.shape(gain)} becomes {ref.shape} after a {rotation_deg}° rotation, "
            f"which does not match frames of size {np.shape(frames)[-2:]}"
        )
    return np.asarray(frames, dtype=np.float32) * ref.astype(np.float32)


def apply_defects(
    frames: np.ndarray,
    defect_mask: np.ndarray,
    method: Literal["median", "mean"] = "median",
    max_radius_px: int = 16,
) -> np.ndarray:
    """Replace defect pixels by the median (or mean) of their good neighbours, frame by frame.

    Each defect pixel takes the good pixels in the smallest square window of radius 1, 2, … up to
    ``max_radius_px`` that contains any, so defect lines a few pixels wide are filled from their sides.

    Parameters
    ----------
    frames
        ``(y, x)`` or ``(n, y, x)`` frames.
    defect_mask
        Boolean ``(y, x)``, True at defect pixels.
    method
        ``"median"`` (robust to neighbouring hot pixels) or ``"mean"``.
    max_radius_px
        Largest window radius searched for good neighbours.

    Returns
    -------
    numpy.ndarray
        A float32 copy of the frames with the defect pixels replaced.
    """
    out = np.array(frames, dtype=np.float32)
    stack = out if out.ndim == 3 else out[np.newaxis]
    mask = np.asarray(defect_mask, dtype=bool)
    if mask.shape != stack.shape[1:]:
        raise ValueError(f"defect mask of shape {mask.shape} does not match frames of size {stack.shape[1:]}")
    if method not in ("median", "mean"):
        raise ValueError(f"method must be 'median' or 'mean', not {method!r}")
    reduce = np.nanmedian if method == "median" else np.nanmean
    ys, xs = np.nonzero(mask)
    ny, nx = mask.shape
    for radius in range(1, max_radius_px + 1):
        if ys.size == 0:
            break
        dy, dx = (g.ravel() for g in np.mgrid[-radius : radius + 1, -radius : radius + 1])
        yy, xx = ys[:, None] + dy, xs[:, None] + dx
        inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
        yy, xx = np.clip(yy, 0, ny - 1), np.clip(xx, 0, nx - 1)
        good = inside & ~mask[yy, xx]
        found = good.any(axis=1)
        if found.any():
            values = stack[:, yy[found], xx[found]]
            values[:, ~good[found]] = np.nan
            stack[:, ys[found], xs[found]] = reduce(values, axis=-1)
        ys, xs = ys[~found], xs[~found]
    if ys.size:
        raise ValueError(f"{ys.size} defect pixels have no good pixel within {max_radius_px} px")
    return out
