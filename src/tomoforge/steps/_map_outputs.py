"""The ``map`` artifact: a map with its half maps, their FSC and the pictures a person looks at.

A ``map`` folder holds ``map.mrc``, ``half1.mrc`` and ``half2.mrc`` (voxel size in the header, centre voxel
``N // 2``), ``fsc.csv`` (shell, frequency in 1/Å, resolution in Å, FSC between the half maps), ``fsc.svg`` (the
curve with the 0.143 line), ``map_slices.png`` (the central xy, xz and yz sections side by side), ``map_isosurface.png`` (a shaded isosurface
from the top, front and side), ``angular_distribution.png`` (where the particles' z axes point) and
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
    from tomoforge.steps._ctf_plots import nice_ticks

    width, height, left, right, top, bottom = 560, 320, 56, 540, 24, 272
    f_max = float(frequencies[-1]) if len(frequencies) else 1.0

    def x(f: float) -> float:
        return left + f / f_max * (right - left)

    def y(v: float) -> float:
        return bottom - (min(max(v, -0.1), 1.05) + 0.1) / 1.15 * (bottom - top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for v in (0.0, 0.143, 0.5, 1.0):
        out.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{right}" y2="{y(v):.1f}" stroke="#ccc"/>')
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    for f in nice_ticks(0.0, f_max):
        if 0 < f <= f_max:
            out.append(f'<line x1="{x(f):.1f}" y1="{top}" x2="{x(f):.1f}" y2="{bottom}" stroke="#eee"/>')
            out.append(f'<text x="{x(f):.1f}" y="{bottom + 16}" text-anchor="middle">1/{1 / f:.3g}</text>')
    points = " ".join(f"{x(float(f)):.1f},{y(float(v)):.1f}" for f, v in zip(frequencies, fsc, strict=True))
    out.append(f'<polyline points="{points}" fill="none" stroke="#1f5fbf" stroke-width="2"/>')
    out.append(
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#333"/>'
    )
    label = "not reached" if not math.isfinite(resolution_angstrom) else f"{resolution_angstrom:.1f} Å"
    out.append(
        f'<text x="{left}" y="{top - 8}" font-size="13">FSC between half maps; 0.143 at {label}</text>'
    )
    out.append(
        f'<text x="{(left + right) / 2}" y="{height - 6}" text-anchor="middle">spatial frequency (1/Å)</text>'
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


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
    from tomoforge.steps._map_pictures import angular_distribution_png, isosurface_png
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
        angular_distribution_png(rotations, folder / "angular_distribution.png")
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
