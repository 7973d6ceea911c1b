"""The iterations of ``averaging.refine_3d`` (see its module docstring)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from tomoforge.averaging.initial_model import Subtomograms
    from tomoforge.workflow import RunContext

__all__ = ["run_refinement_3d"]

_BATCH = 64


def run_refinement_3d(
    params: Any, folder: Path, reference: Path | None, ctx: RunContext, device: torch.device
) -> dict[str, Path]:
    """Run the refinement on the 3D subtomograms in ``folder``; write ``map`` and ``particles`` into
    ``ctx.work_dir``."""
    import torch

    from tomoforge.averaging import fsc_resolution_angstrom, shell_frequencies_per_angstrom, soft_sphere_mask
    from tomoforge.averaging.align import local_rotations
    from tomoforge.averaging.initial_model import (
        local_frame,
        noise_power,
        offsets_within,
        posterior,
    )
    from tomoforge.averaging.subtomogram_refine import half_maps, half_sums, undo_shifts
    from tomoforge.steps._initial_model import read_subtomogram_index, subtomogram_reader
    from tomoforge.steps._map_outputs import write_map_folder, write_posed_particles
    from tomoforge.steps._particle_views import particle_table
    from tomoforge.steps._refine import (
        angular_step_deg,
        close_iteration,
        reference_map_file,
        starting_reference,
    )
    from tomoforge.workflow.fsutil import atomic_write_text

    record, particles = read_subtomogram_index(folder)
    pixel, box = float(record["pixel_size_angstrom"]), int(record["crop_size_px"])
    n = len(particles.particles)
    ts_ids = {p.ts_id for p in particles.particles}
    tables = particle_table(particles, ts_ids, {}, params.half_sets)
    halves = np.zeros(n, dtype=int)
    for ts_id, table in tables.items():
        halves[[i for i, p in enumerate(particles.particles) if p.ts_id == ts_id]] = table[2]
    starts = torch.from_numpy(np.stack([p.rotation() for p in particles.particles]))
    poses = starts.clone()
    moves = torch.zeros((n, 3), dtype=torch.float64)  # displacement in the tomogram frame, pixels
    read = subtomogram_reader(folder, record, keep=True)
    diameter = params.mask_diameter_angstrom or 0.8 * box * pixel
    radius = min(diameter / 2 / pixel, box / 2 - 1)
    mask = soft_sphere_mask(box, radius_px=radius, edge_px=max(1.0, 0.06 * box)).to(device)
    shells = shell_frequencies_per_angstrom(box, pixel)
    offsets = offsets_within(params.max_shift_angstrom / pixel)

    def batch(indices: list[int]) -> Subtomograms:
        pairs = [read(i) for i in indices]
        turned = local_frame(
            torch.stack([p[0] for p in pairs]).to(device),
            torch.stack([p[1] for p in pairs]).to(device),
            poses[indices].to(device=device, dtype=torch.float32),
        )
        local = (poses[indices].transpose(1, 2) @ moves[indices][:, :, None])[:, :, 0]
        return undo_shifts(turned, local)

    # Noise power per shell from every particle at its starting pose.
    pooled = [noise_power(batch(list(range(first, min(first + _BATCH, n))))) for first in range(0, n, _BATCH)]
    noise_total = torch.stack([p[0] for p in pooled]).sum(dim=0)
    noise_count = torch.stack([p[1] for p in pooled]).sum(dim=0)
    sigma2 = noise_total / noise_count.clamp(min=1)

    def references() -> Any:
        sums = {}
        for h in (1, 2):
            members = [int(i) for i in np.flatnonzero(halves == h)]
            parts = [
                half_sums(batch(members[first : first + _BATCH]), sigma2)
                for first in range(0, len(members), _BATCH)
            ]
            data = torch.stack([p[0] for p in parts]).sum(dim=0)
            weights = torch.stack([p[1] for p in parts]).sum(dim=0)
            sums[h] = (data, weights)
        return half_maps(sums, symmetry=params.symmetry, mask=mask)

    reference_file = reference_map_file(reference) if reference is not None else None
    iterations: list[dict[str, Any]] = []
    stopped_because = f"not converged within iterations = {params.iterations}"
    scores = torch.zeros(n, dtype=torch.float64)
    for iteration in range(params.iterations):
        if iteration == 0 and reference_file is not None:
            start = starting_reference(reference_file, box, pixel, params.initial_low_pass_angstrom)
            maps = {1: start.float().to(device) * mask, 2: start.float().to(device) * mask}
            resolution = params.initial_low_pass_angstrom
        else:
            made = references()
            maps = {1: made.half1 * mask, 2: made.half2 * mask}
            resolution = fsc_resolution_angstrom(made.fsc_half_maps, shells, 0.143)
            if not math.isfinite(resolution):
                resolution = params.initial_low_pass_angstrom
        cutoff = min(0.45, pixel / resolution)
        step = angular_step_deg(
            params.initial_step_deg, params.final_step_deg, iteration, resolution, 2 * radius * pixel
        )
        candidates = local_rotations(step)
        turned, shifted = [], []
        bar = ctx.progress(n, f"iteration {iteration + 1}: local searches")
        for h in (1, 2):
            members = [int(i) for i in np.flatnonzero(halves == h)]
            for first in range(0, len(members), _BATCH):
                chunk = members[first : first + _BATCH]
                proposed = poses[chunk][:, None] @ candidates[None]  # (m, 27, 3, 3)
                if params.sigma_tilt_deg is not None:
                    axes = proposed[..., :, 2]
                    start_axes = starts[chunk][:, None, :, 2]
                    tilt = torch.rad2deg(torch.acos((axes * start_axes).sum(-1).clamp(-1.0, 1.0)))
                    log_prior = torch.where(
                        tilt <= 3 * params.sigma_tilt_deg, -0.5 * (tilt / params.sigma_tilt_deg) ** 2, -1e4
                    )
                else:
                    log_prior = torch.zeros(len(candidates), dtype=torch.float64)
                post = posterior(maps[h], batch(chunk), candidates, log_prior, offsets, sigma2, cutoff)
                best = post.best_rotation.cpu()
                delta = offsets[post.best_offset.cpu()].double()
                new = proposed[torch.arange(len(chunk)), best]
                for k, i in enumerate(chunk):
                    turn = (torch.trace(poses[i].T @ new[k]) - 1) / 2
                    turned.append(math.degrees(math.acos(max(-1.0, min(1.0, float(turn))))))
                    shifted.append(float(torch.linalg.vector_norm(delta[k])) * pixel)
                moves[chunk] += (poses[chunk] @ delta[:, :, None])[:, :, 0]
                poses[chunk] = new
                scores[chunk] = post.best_probability.double().cpu()
                for _ in chunk:
                    bar()
        iterations.append(
            {
                "iteration": iteration + 1,
                "resolution_angstrom": resolution,
                "search_cutoff_angstrom": pixel / cutoff,
                "step_deg": step,
                "mean_rotation_change_deg": float(np.mean(turned)),
                "mean_shift_angstrom": float(np.mean(shifted)),
                "mean_best_probability": float(scores.mean()),
            }
        )
        stopped = close_iteration(iterations, params.final_step_deg, pixel, ctx)
        if stopped is not None:
            stopped_because = stopped
            break
    made = references()
    out_map = ctx.work_dir / "map"
    out_map.mkdir()
    final = write_map_folder(
        out_map, made, pixel_size_angstrom=pixel,
        extra={"particles": n, "symmetry": params.symmetry},
        rotations=poses.numpy(),
    )  # fmt: skip
    refined = [
        p.model_copy(
            update={
                "rotation_matrix": tuple(tuple(float(v) for v in row) for row in poses[i].tolist()),
                "position_angstrom": tuple(
                    float(a + b)
                    for a, b in zip(p.position_angstrom, (moves[i] * pixel).tolist(), strict=True)
                ),
                "half_set": int(halves[i]),
                "score": float(scores[i]),
            }
        )
        for i, p in enumerate(particles.particles)
    ]
    out_particles = write_posed_particles(
        ctx.work_dir / "particles",
        particles.model_copy(update={"particles": refined, "symmetry": params.symmetry}),
    )
    summary = {
        "particles": n,
        "converged": bool(iterations[-1]["converged"]),
        "stopped_because": stopped_because,
        "iterations": iterations,
        "final": final,
    }
    atomic_write_text(out_map / "refine.json", json.dumps(summary, indent=1) + "\n")
    return {"map": out_map, "particles": out_particles}
