"""The ``map`` artifact: a map with its half maps, their FSC and the pictures a person looks at.

A ``map`` folder holds ``map.mrc``, ``half1.mrc`` and ``half2.mrc`` (voxel size in the header, centre voxel
``N // 2``), ``fsc.csv`` (shell, frequency in 1/Å, resolution in Å, FSC between the half maps), ``fsc.svg`` (the
curve with the 0.143 line), ``map_slices.png`` (the central xy, xz and yz sections side by side), ``map_isosurface.png`` (a shaded isosurface
from the top, front and side), ``angular_distribution.svg`` (where the particles' z axes point) and
``reconstruction.json`` (resolution at FSC 0.143 and 0.5, and what the step adds).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tomoforge.averaging.particles import HalfMaps

__all__ = ["fsc_svg", "read_cubic_map", "slices_png", "write_map_folder", "write_posed_particles"]


def fsc_svg(frequencies: np.ndarray, fsc: np.ndarray, resolution_angstrom: float) -> str:
    """An SVG of the FSC against spatial frequency, with the 0.143 threshold and the resolution found."""
    from tomoforge.steps._plots import curves_svg

    label = "not reached" if not math.isfinite(resolution_angstrom) else f"{resolution_angstrom:.1f} Å"
    return curves_svg(
        frequencies,
        [("FSC", fsc, "#1f5fbf")],
        title=f"FSC between half maps; 0.143 at {label}",
        x_label="spatial frequency (1/Å)",
        y_range=(-0.1, 1.05),
        guides=[0.0, 0.143, 0.5, 1.0],
        x_resolution_ticks=True,
    )


def slices_png(volume: np.ndarray, path: Path) -> None:
    from tomoforge.io.png import write_png
    from tomoforge.steps._plots import to_rgb

    n = volume.shape[0]
    c = n // 2
    sections = [volume[c], volume[:, c, :], volume[:, :, c]]  # xy, xz, yz
    gap = np.full((n, 4, 3), 255, dtype=np.uint8)
    tiles = [to_rgb(s) for s in sections]
    write_png(np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1), path)


def write_map_folder(
    folder: Path,
    maps: HalfMaps,
    *,
    pixel_size_angstrom: float,
    extra: dict[str, object],
    rotations: np.ndarray | None = None,
) -> dict[str, object]:
    """Write a ``map`` folder (module docstring); returns the record written to ``reconstruction.json``."""
    from tomoforge.averaging.fsc import fsc_resolution_angstrom, shell_frequencies_per_angstrom
    from tomoforge.io.mrc import write_mrc
    from tomoforge.steps._map_pictures import angular_distribution_svg, isosurface_png
    from tomoforge.workflow.fsutil import atomic_write_text

    for name, volume in (("map", maps.map), ("half1", maps.half1), ("half2", maps.half2)):
        write_mrc(
            volume.detach().cpu().numpy().astype(np.float32),
            folder / f"{name}.mrc",
            voxel_size_angstrom=pixel_size_angstrom,
        )
    box = maps.map.shape[0]
    frequencies = shell_frequencies_per_angstrom(box, pixel_size_angstrom)
    fsc = maps.fsc_half_maps.cpu()
    resolution = fsc_resolution_angstrom(fsc, frequencies, 0.143)
    rows = ["shell,frequency_per_angstrom,resolution_angstrom,fsc"]
    for s, (f, v) in enumerate(zip(frequencies.tolist(), fsc.tolist(), strict=True)):
        rows.append(f"{s},{f:.6f},{(1 / f if f > 0 else math.inf):.3f},{v:.5f}")
    atomic_write_text(folder / "fsc.csv", "\n".join(rows) + "\n")
    atomic_write_text(folder / "fsc.svg", fsc_svg(frequencies.numpy(), fsc.numpy(), resolution))
    slices_png(maps.map.detach().cpu().numpy(), folder / "map_slices.png")
    isosurface_png(maps.map.detach().cpu().numpy(), folder / "map_isosurface.png")
    if rotations is not None and len(rotations):
        atomic_write_text(folder / "angular_distribution.svg", angular_distribution_svg(rotations))
    record: dict[str, object] = {
        **extra,
        "box_size_px": box,
        "pixel_size_angstrom": pixel_size_angstrom,
        "resolution_angstrom": resolution if math.isfinite(resolution) else None,
        "resolution_fsc_0.5_angstrom": (lambda r: r if math.isfinite(r) else None)(
            fsc_resolution_angstrom(fsc, frequencies, 0.5)
        ),
    }
    atomic_write_text(folder / "reconstruction.json", json.dumps(record, indent=1) + "\n")
    return record


def read_cubic_map(path: Path) -> tuple[np.ndarray, float]:
    """A reference map (float64) and its voxel size in Å; a clear error when it is not a cube or has no voxel
    size."""
    from tomoforge.io.mrc import read_mrc

    mrc = read_mrc(path)
    data = np.array(mrc.data, dtype=np.float64)
    if data.ndim != 3 or len(set(data.shape)) != 1:
        raise ValueError(f"{path}: the reference must be a cubic map, its shape is {data.shape}")
    voxel = float(mrc.voxel_size_angstrom[0])
    if not voxel > 0:
        raise ValueError(f"{path}: the header gives no voxel size")
    return data, voxel


def write_posed_particles(folder: Path, particles: Any) -> Path:
    """A ``particles`` folder of the averaging steps: ``particles.json`` and ``particles.star`` (RELION 5, without
    the group labels, which RELION numbers) of a ``ParticleSet``; created here, returned."""
    from tomoforge.io.relion5 import write_relion_particles
    from tomoforge.models import save_json

    folder.mkdir()
    save_json(particles, folder / "particles.json")
    write_relion_particles(
        particles.model_copy(
            update={"particles": [p.model_copy(update={"group": None}) for p in particles.particles]}
        ),
        folder / "particles.star",
    )
    return folder
