"""The iterations of ``averaging.refine`` (see its module docstring): references from the current poses, views of
every particle, local searches, and the outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from tomoforge.models import TiltSeries
    from tomoforge.workflow import RunContext

__all__ = ["run_refinement"]


class _Series:
    """One tilt series' visible tilt images and the state of its particles (positions in Å, rotations)."""

    def __init__(self, series: TiltSeries, table: Any, index: list[int], params: Any, device: torch.device):
        from tomoforge.steps._particle_views import tilt_images

        self.series = series
        self.images = tilt_images(series, params, device)
        self.positions = table[0].copy()
        self.rotations = table[1].copy()
        self.halves = table[2].copy()
        self.index = index


def _reconstruct(state: list[_Series], params: Any, pixel: float, device: torch.device) -> Any:
    from tomoforge.averaging.particles import ParticleAccumulators, reconstruct_half_maps
    from tomoforge.steps._particle_views import insert_views

    accumulators = ParticleAccumulators(params.box_size_px, device=device)
    for s in state:
        insert_views(accumulators, s.series, s.images, (s.positions, s.rotations, s.halves), params, pixel)
    return reconstruct_half_maps(accumulators, symmetry=params.symmetry), accumulators


def _starting_reference(path: Path, box: int, pixel: float, low_pass: float) -> torch.Tensor:
    """The given reference on the refinement's grid, low-passed to ``low_pass`` Å (RELION's ``--ini_high``)."""
    import torch

    from tomoforge.averaging import centre_crop_or_pad
    from tomoforge.picking import rescale_reference
    from tomoforge.steps._map_outputs import read_cubic_map

    data, voxel = read_cubic_map(path)
    volume = centre_crop_or_pad(rescale_reference(torch.from_numpy(data), voxel, pixel), box)
    k = torch.fft.fftfreq(box, dtype=torch.float64)
    radius = torch.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    spectrum = torch.fft.fftn(torch.fft.ifftshift(volume)) * (radius <= pixel / low_pass)
    return torch.fft.fftshift(torch.fft.ifftn(spectrum).real)


def run_refinement(
    params: Any,
    *,
    particles_folder: Path,
    series_folder: Path,
    reference: Path | None,
    tomograms_folder: Path | None,
    ctx: RunContext,
    device: torch.device,
) -> dict[str, Path]:
    """Run the refinement and write the ``map`` and ``particles`` outputs into ``ctx.work_dir``."""
    import torch

    from tomoforge.averaging import fsc_resolution_angstrom, shell_frequencies_per_angstrom, soft_sphere_mask
    from tomoforge.averaging.align import local_rotations, local_search, masked_view_spectra, reference_table
    from tomoforge.averaging.particles import extract_views
    from tomoforge.io.relion5 import write_relion_particles
    from tomoforge.models import save_json
    from tomoforge.steps._map_outputs import write_map_folder
    from tomoforge.steps._particle_views import read_particle_inputs, view_transfers
    from tomoforge.workflow.fsutil import atomic_write_text

    read = read_particle_inputs(
        particles_folder, series_folder, tomograms_folder, params.binning, params.half_sets
    )
    particles, table, origins, pixel = read.particles, read.table, read.origins, read.pixel_size_angstrom
    series_list = read.series
    state = [
        _Series(
            s,
            table[s.ts_id],
            [i for i, p in enumerate(particles.particles) if p.ts_id == s.ts_id],
            params,
            device,
        )
        for s in series_list
        if s.ts_id in table
    ]
    box = params.box_size_px
    diameter = params.mask_diameter_angstrom or 0.8 * box * pixel
    radius, edge = min(diameter / 2 / pixel, box / 2 - 1), max(1.0, 0.06 * box)
    mask = soft_sphere_mask(box, radius_px=radius, edge_px=edge, dtype=torch.float64)
    max_shift = int(params.max_shift_angstrom // pixel)
    shells = shell_frequencies_per_angstrom(box, pixel)
    iterations = []
    for iteration in range(params.iterations):
        if iteration == 0 and reference is not None:
            start = _starting_reference(reference, box, pixel, params.initial_low_pass_angstrom)
            references = {1: start, 2: start}
            resolution = params.initial_low_pass_angstrom
        else:
            maps, _ = _reconstruct(state, params, pixel, device)
            references = {1: maps.half1.double().cpu(), 2: maps.half2.double().cpu()}
            resolution = fsc_resolution_angstrom(maps.fsc_half_maps.cpu(), shells, 0.143)
            if not math.isfinite(resolution):
                resolution = params.initial_low_pass_angstrom
        cutoff = min(0.45, pixel / resolution)
        tables = {h: reference_table((references[h] * mask).to(device)) for h in (1, 2)}
        step = max(params.final_step_deg, params.initial_step_deg / 2**iteration)
        candidates = local_rotations(step).to(device)
        turned, moved, scores = [], [], []
        bar = ctx.progress(sum(len(s.index) for s in state), f"iteration {iteration + 1}: local searches")
        for s in state:
            views: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {
                i: [] for i in range(len(s.index))
            }
            for tilt, image, matrix in s.images:
                cut = extract_views(image, matrix, torch.from_numpy(s.positions / pixel), box)
                if cut.kept.numel() == 0:
                    continue
                spectra = masked_view_spectra(cut.boxes, cut.shifts_xy_px, radius_px=radius, edge_px=edge)
                ctfs = view_transfers(s.series, tilt, cut.depth_px, params, pixel, box).double()
                for k, j in enumerate(cut.kept.tolist()):
                    views[j].append((spectra[k], ctfs[k], matrix[:, :3].double()))
            for j in range(len(s.index)):
                bar()
                if not views[j]:
                    continue
                images = torch.stack([v[0] for v in views[j]])
                found = local_search(
                    tables[int(s.halves[j])][0], tables[int(s.halves[j])][1], images,
                    torch.stack([v[1] for v in views[j]]), torch.stack([v[2] for v in views[j]]),
                    torch.from_numpy(s.rotations[j]).to(device), candidates,
                    max_shift_px=max_shift, max_frequency_per_pixel=cutoff,
                )  # fmt: skip
                new = found.rotation.cpu().numpy()
                turned.append(
                    math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(new.T @ s.rotations[j]) - 1) / 2))))
                )
                moved.append(float(np.linalg.norm(found.shift_xyz_px.cpu().numpy())) * pixel)
                scores.append(found.score)
                s.rotations[j] = new
                s.positions[j] = s.positions[j] + found.shift_xyz_px.cpu().numpy() * pixel
        iterations.append(
            {
                "iteration": iteration + 1,
                "resolution_angstrom": resolution,
                "search_cutoff_angstrom": pixel / cutoff,
                "step_deg": step,
                "mean_rotation_change_deg": float(np.mean(turned)) if turned else 0.0,
                "mean_shift_angstrom": float(np.mean(moved)) if moved else 0.0,
                "mean_score": float(np.mean(scores)) if scores else 0.0,
            }
        )
        ctx.logger.info(
            "iteration %d: references at %.1f Å, step %.2f°, mean change %.2f° and %.1f Å",
            iteration + 1, resolution, step, iterations[-1]["mean_rotation_change_deg"],
            iterations[-1]["mean_shift_angstrom"],
        )  # fmt: skip
    maps, accumulators = _reconstruct(state, params, pixel, device)
    out_map = ctx.work_dir / "map"
    out_map.mkdir()
    final = write_map_folder(
        out_map,
        maps,
        pixel_size_angstrom=pixel,
        extra={"particles": sum(len(s.index) for s in state), "views": accumulators.n_views,
               "views_outside": accumulators.n_views_outside, "symmetry": params.symmetry},
        rotations=np.concatenate([s.rotations for s in state]),
    )  # fmt: skip
    refined = list(particles.particles)
    for s in state:
        origin = origins.get(s.series.ts_id, np.zeros(3))
        for j, i in enumerate(s.index):
            refined[i] = refined[i].model_copy(
                update={
                    "position_angstrom": tuple(float(v) for v in s.positions[j] - origin),
                    "rotation_matrix": tuple(tuple(float(v) for v in row) for row in s.rotations[j]),
                    "half_set": int(s.halves[j]),
                }
            )
    out_particles = ctx.work_dir / "particles"
    out_particles.mkdir()
    result = particles.model_copy(update={"particles": refined, "symmetry": params.symmetry})
    save_json(result, out_particles / "particles.json")
    write_relion_particles(
        result.model_copy(update={"particles": [p.model_copy(update={"group": None}) for p in refined]}),
        out_particles / "particles.star",
    )
    record = {"particles": final["particles"], "iterations": iterations, "final": final}
    atomic_write_text(out_map / "refine.json", json.dumps(record, indent=1) + "\n")
    return {"map": out_map, "particles": out_particles}
