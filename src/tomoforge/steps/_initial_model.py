"""The work of ``averaging.initial_model`` (see its module docstring): reading the 3D subtomograms, running the
kernel, and writing the ``map`` and ``particles`` outputs."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from tomoforge.averaging.initial_model import Subtomograms
    from tomoforge.workflow import RunContext

__all__ = ["fits_in_memory", "read_subtomogram_index", "run_initial_model", "subtomogram_reader"]

_CACHE_BYTES = 2 << 30
"""Subtomograms (in their local frames) are held in memory up to this size, else read again for every batch."""


def read_subtomogram_index(folder: Path) -> tuple[dict[str, Any], Any]:
    """``extraction.json`` and the particles of a 3D ``subtomograms`` folder, checked."""
    from tomoforge.models import ParticleSet

    index_file = folder / "extraction.json"
    if not index_file.is_file():
        raise ValueError(f"{folder}: not a subtomograms folder of averaging.extract (no extraction.json)")
    record = json.loads(index_file.read_text(encoding="utf-8"))
    if record.get("dimension") != "3d":
        raise ValueError(
            f"{index_file}: the subtomograms are {record.get('dimension')!r}; the initial model needs 3D "
            'subtomograms (averaging.extract with dimension = "3d")'
        )
    particles = ParticleSet.model_validate_json((folder / "particles.json").read_text(encoding="utf-8"))
    if len(particles.particles) != len(record["particles"]):
        raise ValueError(f"{folder}: particles.json and extraction.json list different particles")
    if len(particles.particles) < 2:
        raise ValueError(
            f"{folder}: {len(particles.particles)} particle(s); an initial model needs at least 2"
        )
    return record, particles


def subtomogram_reader(folder: Path, record: dict[str, Any], *, keep: bool) -> Any:
    """A function reading particle ``i``'s subtomogram and weights (tomogram frame, float32, checked for the crop
    size); with ``keep`` it holds what it read, when all the particles fit in :data:`_CACHE_BYTES`."""
    import torch

    from tomoforge.io.mrc import read_mrc

    entries, crop = record["particles"], int(record["crop_size_px"])
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    keep = keep and fits_in_memory(record)

    def read(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i in cache:
            return cache[i]
        pair = []
        for key in ("file", "weights"):
            path = folder / entries[i][key]
            data = np.array(read_mrc(path).data, dtype=np.float32)
            if data.shape != (crop, crop, crop):
                raise ValueError(f"{path}: shape {data.shape}, expected ({crop}, {crop}, {crop})")
            pair.append(torch.from_numpy(data))
        if keep:
            cache[i] = (pair[0], pair[1])
        return pair[0], pair[1]

    return read


def fits_in_memory(record: dict[str, Any]) -> bool:
    """Whether every particle's subtomogram and weights fit in :data:`_CACHE_BYTES`."""
    return len(record["particles"]) * int(record["crop_size_px"]) ** 3 * 4 * 2.2 < _CACHE_BYTES


def _loader(folder: Path, record: dict[str, Any], rotations: torch.Tensor, device: torch.device) -> Any:
    """A function loading the local-frame subtomograms of given particles, holding them when they all fit."""
    import torch

    from tomoforge.averaging.initial_model import Subtomograms, local_frame

    read = subtomogram_reader(folder, record, keep=False)
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    keep = fits_in_memory(record)

    def load(indices: list[int]) -> Subtomograms:
        missing = [i for i in indices if i not in cache]
        fresh: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        if missing:
            pairs = [read(i) for i in missing]
            turned = local_frame(
                torch.stack([p[0] for p in pairs]).to(device),
                torch.stack([p[1] for p in pairs]).to(device),
                rotations[missing].to(device=device, dtype=torch.float32),
            )
            fresh = {i: (turned.data[k], turned.weights[k]) for k, i in enumerate(missing)}
            if keep:
                cache.update(fresh)
        held = [cache.get(i) or fresh[i] for i in indices]
        return Subtomograms(torch.stack([h[0] for h in held]), torch.stack([h[1] for h in held]))

    return load


def run_initial_model(params: Any, folder: Path, ctx: RunContext, device: torch.device) -> dict[str, Path]:
    """Run the initial model on the subtomograms in ``folder``; write ``map`` and ``particles`` into
    ``ctx.work_dir``."""
    import torch

    from tomoforge.averaging.initial_model import de_novo_model
    from tomoforge.io.mrc import write_mrc
    from tomoforge.steps._map_outputs import slices_png, write_posed_particles
    from tomoforge.steps._map_pictures import angular_distribution_svg, isosurface_png
    from tomoforge.workflow.fsutil import atomic_write_text

    record, particles = read_subtomogram_index(folder)
    pixel = float(record["pixel_size_angstrom"])
    box = int(record["crop_size_px"])
    n = len(particles.particles)
    picked = torch.from_numpy(np.stack([p.rotation() for p in particles.particles]))
    diameter = params.mask_diameter_angstrom or 0.8 * box * pixel
    radius = min(diameter / 2 / pixel, box / 2 - 1)
    final = min(0.45, pixel / params.final_resolution_angstrom)
    initial = min(final, pixel / params.initial_resolution_angstrom)
    load = _loader(folder, record, picked, device)
    bar = ctx.progress(params.iterations + n, "initial model")
    started = time.monotonic()
    result = de_novo_model(
        load,
        n,
        box=box,
        iterations=params.iterations,
        batch_size=params.batch_size,
        step_deg=params.angular_step_deg,
        sigma_tilt_deg=params.sigma_tilt_deg,
        offset_range_px=params.offset_range_px,
        symmetry=params.symmetry,
        symmetrize_during=not params.symmetry_later,
        tau2_fudge=params.tau2_fudge,
        mask_radius_px=radius,
        initial_cutoff_per_pixel=initial,
        final_cutoff_per_pixel=final,
        seed=params.seed,
        progress=bar,
    )
    seconds = time.monotonic() - started
    poses = picked @ result.rotations
    moves = (picked @ result.shifts_px[:, :, None])[:, :, 0] * pixel
    for it in result.history[-1:]:
        ctx.logger.info(
            "initial model: last iteration at %.1f Å, mean best probability %.3f, model change %.4f",
            pixel / it["cutoff_per_pixel"], it["mean_best_probability"], it["model_change"],
        )  # fmt: skip

    out_map = ctx.work_dir / "map"
    out_map.mkdir()
    volume = result.model.detach().cpu().numpy().astype(np.float32)
    write_mrc(volume, out_map / "map.mrc", voxel_size_angstrom=pixel)
    slices_png(volume, out_map / "map_slices.png")
    isosurface_png(volume, out_map / "map_isosurface.png")
    atomic_write_text(out_map / "angular_distribution.svg", angular_distribution_svg(poses.numpy()))
    summary = {
        "particles": n,
        "box_size_px": box,
        "pixel_size_angstrom": pixel,
        "symmetry": params.symmetry,
        "symmetry_later": params.symmetry_later,
        "axis_rotation": result.axis_rotation.tolist(),
        "axis_score": result.axis_score,
        "mask_diameter_angstrom": diameter,
        "seconds": seconds,
        "mean_best_probability_final_pass": float(result.best_probability.mean()),
        "iterations": [
            {
                **it,
                "cutoff_angstrom": pixel / it["cutoff_per_pixel"] if it["cutoff_per_pixel"] > 0 else math.inf,
            }
            for it in result.history
        ],
    }
    atomic_write_text(out_map / "initial_model.json", json.dumps(summary, indent=1) + "\n")

    updated = [
        p.model_copy(
            update={
                "rotation_matrix": tuple(tuple(float(v) for v in row) for row in poses[i].tolist()),
                "position_angstrom": tuple(
                    float(a + b) for a, b in zip(p.position_angstrom, moves[i].tolist(), strict=True)
                ),
                "score": float(result.best_probability[i]),
            }
        )
        for i, p in enumerate(particles.particles)
    ]
    out_particles = write_posed_particles(
        ctx.work_dir / "particles",
        particles.model_copy(update={"particles": updated, "symmetry": params.symmetry}),
    )
    return {"map": out_map, "particles": out_particles}
