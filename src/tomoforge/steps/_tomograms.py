"""The ``tomograms`` artifact: reconstructed volumes with their model, and the slice previews people look at.

A ``tomograms`` folder holds, per tilt series:

* ``<ts>.mrc``: the tomogram, axes ``(z, y, x)``, voxel size and origin in the header (the origin puts the centre
  voxel ``N // 2`` at the specimen position ``Tomogram.origin_angstrom``, so voxel 0 sits at
  ``origin − (N // 2)·voxel`` as in Scipion's default origin);
* ``<ts>.json``: the :class:`~tomoforge.models.Tomogram` model, file paths relative to the folder (made absolute
  by :func:`read_tomograms`);
* optionally ``<ts>_even.mrc`` / ``<ts>_odd.mrc``: the same geometry from the even/odd frame sums;
* ``<ts>_xy.png`` / ``<ts>_xz.png``: central slices (y and z up, as IMOD shows them);
* ``<ts>_reconstruction.json``: how it was made (views used, geometry, timings).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tomoforge.models import Tomogram, load_json, save_json

__all__ = ["central_slices", "read_tomograms", "write_slice_pngs", "write_tomogram_model"]


def _relative(path: Path | None, folder: Path) -> Path | None:
    if path is None:
        return None
    try:
        return path.relative_to(folder)
    except ValueError:
        return path


def _absolute(path: Path | None, folder: Path) -> Path | None:
    return None if path is None or path.is_absolute() else folder / path


def write_tomogram_model(folder: Path, tomogram: Tomogram) -> Path:
    """Write ``<ts>.json`` with paths relative to ``folder``."""
    stored = tomogram.model_copy(
        update={
            "volume_file": _relative(tomogram.volume_file, folder),
            "even_volume_file": _relative(tomogram.even_volume_file, folder),
            "odd_volume_file": _relative(tomogram.odd_volume_file, folder),
        }
    )
    path = folder / f"{tomogram.ts_id}.json"
    save_json(stored, path)
    return path


def read_tomograms(folder: Path) -> list[Tomogram]:
    """Read every ``<ts>.json`` tomogram model of a ``tomograms`` folder, with absolute paths."""
    found = []
    for path in sorted(folder.glob("*.json")):
        if path.stem.endswith("_reconstruction"):
            continue
        tomogram = load_json(Tomogram, path)
        found.append(
            tomogram.model_copy(
                update={
                    "volume_file": _absolute(tomogram.volume_file, folder) or tomogram.volume_file,
                    "even_volume_file": _absolute(tomogram.even_volume_file, folder),
                    "odd_volume_file": _absolute(tomogram.odd_volume_file, folder),
                }
            )
        )
    if not found:
        raise ValueError(f"{folder}: holds no tomogram (<ts>.json)")
    return found


def central_slices(volume: np.ndarray, half_width: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The central XY section and XZ slice of a ``(z, y, x)`` volume, each averaged over ``2·half_width + 1``."""
    nz, ny, _ = volume.shape
    z0, y0 = max(0, nz // 2 - half_width), max(0, ny // 2 - half_width)
    xy = np.asarray(volume[z0 : nz // 2 + half_width + 1], dtype=np.float64).mean(axis=0)
    xz = np.asarray(volume[:, y0 : ny // 2 + half_width + 1], dtype=np.float64).mean(axis=1)
    return xy, xz


def write_slice_pngs(volume: np.ndarray, folder: Path, ts_id: str) -> tuple[Path, Path]:
    """Write ``<ts>_xy.png`` and ``<ts>_xz.png`` (rows from the bottom: y and z point up)."""
    from tomoforge.io.png import write_png
    from tomoforge.steps._plots import to_rgb

    xy, xz = central_slices(volume)
    return (
        write_png(to_rgb(xy), folder / f"{ts_id}_xy.png", origin="lower"),
        write_png(to_rgb(xz), folder / f"{ts_id}_xz.png", origin="lower"),
    )
