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

__all__ = [
    "angular_step_deg",
    "close_iteration",
    "convergence_checks",
    "reference_map_file",
    "run_refinement",
    "starting_reference",
]

RESOLUTION_TOLERANCE = 0.01
"""A resolution better than the previous iteration's by less than this fraction counts as no gain."""


class _Series:
    """One tilt series' visible tilt images and the state of its particles (positions in Å, rotations)."""

    def __init__(self, series: TiltSeries, table: Any, index: list[int], params: Any, device: torch.device):
        from tomoforge.steps._particle_views import tilt_images

        self.series = series
        self.images = tilt_images(series, params, device)
        self.positions = table[0].copy()
        self.rotations = table[1].copy()
        self.starts = table[1].copy()  # the priors' centres: the rotations the particles came with
        self.halves = table[2].copy()
        self.index = index


def _reconstruct(state: list[_Series], params: Any, pixel: float, device: torch.device) -> Any:
    from tomoforge.averaging.particles import ParticleAccumulators, reconstruct_half_maps
    from tomoforge.steps._particle_views import insert_views

    accumulators = ParticleAccumulators(params.box_size_px, device=device)
    for s in state:
        insert_views(accumulators, s.series, s.images, (s.positions, s.rotations, s.halves), params, pixel)
    return reconstruct_half_maps(accumulators, symmetry=params.symmetry), accumulators


def reference_map_file(path: Path) -> Path:
    """The MRC file of a ``reference`` input: the file itself, or ``map.mrc`` in a ``map`` folder (of
    ``averaging.reconstruct``, ``averaging.refine`` or ``averaging.initial_model``)."""
    if not path.is_dir():
        return path
    if not (path / "map.mrc").is_file():
        raise ValueError(f"{path}: the reference folder holds no map.mrc (expected a map from averaging.*)")
    return path / "map.mrc"


def angular_step_deg(
    initial_step_deg: float,
    final_step_deg: float,
    iteration: int,
    resolution_angstrom: float,
    diameter_angstrom: float,
) -> float:
    """The angular step of an iteration (0-based), degrees: ``initial / 2^k`` (a halving ladder, like RELION's
    HEALPix orders) with ``k`` the iteration, or the first order whose step is at most ``resolution / diameter``
    radians when that is finer (a coarser turn moves the particle's rim by more than half a resolution element and
    could step over the correlation peak), and never below ``final_step_deg``."""
    supported = math.degrees(resolution_angstrom / diameter_angstrom)
    order = iteration
    while initial_step_deg / 2**order > max(supported, final_step_deg):
        order += 1
    return max(final_step_deg, initial_step_deg / 2**order)


def convergence_checks(
    previous: dict[str, Any] | None, current: dict[str, Any], final_step_deg: float, pixel_angstrom: float
) -> dict[str, bool]:
    """RELION's auto-refine convergence, one check per criterion: the step is the final one, the resolution gained
    less than :data:`RESOLUTION_TOLERANCE` over the previous iteration's, and the mean changes of the poses are below
    the step and one pixel. ``current`` and ``previous`` are iteration records of ``refine.json``."""
    return {
        "final_step": current["step_deg"] <= final_step_deg * (1 + 1e-9),
        "no_resolution_gain": previous is not None
        and current["resolution_angstrom"] >= previous["resolution_angstrom"] * (1 - RESOLUTION_TOLERANCE),
        "rotations_settled": current["mean_rotation_change_deg"] < current["step_deg"],
        "positions_settled": current["mean_shift_angstrom"] < pixel_angstrom,
    }


def starting_reference(path: Path, box: int, pixel: float, low_pass: float) -> torch.Tensor:
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


def close_iteration(
    iterations: list[dict[str, Any]], final_step_deg: float, pixel: float, ctx: RunContext
) -> str | None:
    """Add the convergence checks to the last iteration's record and log it; returns why the refinement stops when
    it has converged, else None."""
    current = iterations[-1]
    current["convergence"] = convergence_checks(
        iterations[-2] if len(iterations) > 1 else None, current, final_step_deg, pixel
    )
    current["converged"] = all(current["convergence"].values())
    resolution, step = current["resolution_angstrom"], current["step_deg"]
    ctx.logger.info(
        "iteration %d: references at %.1f Å, step %.2f°, mean change %.2f° and %.1f Å",
        current["iteration"], resolution, step, current["mean_rotation_change_deg"], current["mean_shift_angstrom"],
    )  # fmt: skip
    if not current["converged"]:
        return None
    return (
        f"converged at iteration {current['iteration']}: step {step:g}° is the final one, references at "
        f"{resolution:.1f} Å against {iterations[-2]['resolution_angstrom']:.1f} Å before (no gain over "
        f"{RESOLUTION_TOLERANCE:.0%}), mean changes {current['mean_rotation_change_deg']:.2f}° < {step:g}° "
        f"and {current['mean_shift_angstrom']:.1f} Å < {pixel:g} Å (one pixel)"
    )


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
    from tomoforge.averaging.align import (
        local_rotations,
        local_search,
        masked_view_spectra,
        prior_angles_deg,
        reference_table,
        score_noise_variance,
    )
    from tomoforge.averaging.particles import extract_views
    from tomoforge.steps._map_outputs import write_map_folder, write_posed_particles
    from tomoforge.steps._particle_views import read_particle_inputs, view_transfers
    from tomoforge.workflow.fsutil import atomic_write_text

    reference_file = reference_map_file(reference) if reference is not None else None
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
    with_prior = params.sigma_tilt_deg is not None or params.sigma_psi_deg is not None
    n_fold = int(params.symmetry[1:])  # the n-fold axis along z of Cn and Dn
    iterations: list[dict[str, Any]] = []
    stopped_because = f"not converged within iterations = {params.iterations}"
    for iteration in range(params.iterations):
        if iteration == 0 and reference_file is not None:
            start = starting_reference(reference_file, box, pixel, params.initial_low_pass_angstrom)
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
        step = angular_step_deg(
            params.initial_step_deg, params.final_step_deg, iteration, resolution, 2 * radius * pixel
        )
        candidates = local_rotations(step).to(device)
        turned, moved, scores, tilts, psis = [], [], [], [], []
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
                prior = torch.from_numpy(s.starts[j]).to(device)
                found = local_search(
                    tables[int(s.halves[j])][0], tables[int(s.halves[j])][1], images,
                    torch.stack([v[1] for v in views[j]]), torch.stack([v[2] for v in views[j]]),
                    torch.from_numpy(s.rotations[j]).to(device), candidates,
                    max_shift_px=max_shift, max_frequency_per_pixel=cutoff,
                    prior_rotation=prior, sigma_tilt_deg=params.sigma_tilt_deg,
                    sigma_psi_deg=params.sigma_psi_deg, symmetry_order=n_fold,
                    score_noise_variance=score_noise_variance(
                        images, max_frequency_per_pixel=cutoff, radius_px=radius, edge_px=edge
                    ) if with_prior else None,
                )  # fmt: skip
                tilt_deg, psi_deg = prior_angles_deg(found.rotation, prior, symmetry_order=n_fold)
                tilts.append(float(tilt_deg))
                psis.append(abs(float(psi_deg)))
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
                "mean_tilt_from_start_deg": float(np.mean(tilts)) if tilts else 0.0,
                "max_tilt_from_start_deg": float(np.max(tilts)) if tilts else 0.0,
                "mean_abs_psi_from_start_deg": float(np.mean(psis)) if psis else 0.0,
            }
        )
        stopped = close_iteration(iterations, params.final_step_deg, pixel, ctx)
        if stopped is not None:
            stopped_because = stopped
            break
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
    out_particles = write_posed_particles(
        ctx.work_dir / "particles",
        particles.model_copy(update={"particles": refined, "symmetry": params.symmetry}),
    )
    record = {
        "particles": final["particles"],
        "converged": bool(iterations[-1]["converged"]),
        "stopped_because": stopped_because,
        "iterations": iterations,
        "final": final,
    }
    atomic_write_text(out_map / "refine.json", json.dumps(record, indent=1) + "\n")
    return {"map": out_map, "particles": out_particles}
