"""The ``subtomograms`` artifact of ``averaging.extract``: cutting the particles' views out of a tilt series, and
writing the stacks, the RELION 5 particle file and the index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from tomoforge.models import ParticleSet, TiltSeries
    from tomoforge.steps._particle_views import ParticleTable
    from tomoforge.workflow.context import ProgressTracker

__all__ = ["extract_series", "subtomogram_3d", "write_extraction"]

_CHUNK = 256
"""Particles processed together: their views of every tilt are held until their stacks are written."""


def extract_series(
    out: Path,
    series: TiltSeries,
    table: ParticleTable,
    index: list[int],
    params: Any,
    progress: ProgressTracker,
    device: torch.device,
) -> list[dict[str, object] | None]:
    """Extract the particles of one series (``index``: their positions in the particle list, for file names);
    returns per particle its record (``file``, ``tilts``) or None when it has fewer than ``min_frames`` visible
    tilts."""
    import torch

    from tomoforge.averaging.particles import extract_views
    from tomoforge.fourier import shift_phase_ramp_2d
    from tomoforge.io.mrc import write_mrc
    from tomoforge.steps._particle_views import tilt_images, view_transfers

    pixel = series.pixel_size_angstrom * params.binning
    box = params.box_size_px
    crop = params.crop_size_px or box
    lo = box // 2 - crop // 2
    images = tilt_images(series, params, device)
    folder = out / "Subtomograms" / series.ts_id
    folder.mkdir(parents=True, exist_ok=True)
    positions = torch.from_numpy(table[0] / pixel)
    records: list[dict[str, object] | None] = []
    for start in range(0, len(index), _CHUNK):
        chunk = range(start, min(start + _CHUNK, len(index)))
        views: dict[int, list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]] = {i: [] for i in chunk}
        for tilt, image, matrix in images:
            cut = extract_views(image, matrix, positions[start : chunk.stop], box)
            if cut.kept.numel() == 0:
                continue
            centred = torch.fft.rfft2(cut.boxes) * shift_phase_ramp_2d(cut.shifts_xy_px, (box, box))
            if params.dimension == "2d":  # CTF- and dose-premultiplied boxes
                centred = centred * view_transfers(series, tilt, cut.depth_px, params, pixel, box)
                transfer = torch.empty(len(cut.kept), 0)
            else:  # raw boxes, their transfer at the crop size for the 3D insertion
                transfer = view_transfers(series, tilt, cut.depth_px, params, pixel, crop).cpu()
            boxes = torch.fft.irfft2(centred, s=(box, box))[:, lo : lo + crop, lo : lo + crop].cpu()
            rotation = matrix[:, :3].to(torch.float32).cpu()
            for k, j in enumerate(cut.kept.tolist()):
                views[start + j].append((tilt.index, boxes[k], transfer[k], rotation))
        for i in chunk:
            progress()
            mine = views[i]
            if len(mine) < params.min_frames:
                records.append(None)
                continue
            stem = f"Subtomograms/{series.ts_id}/{index[i] + 1:06d}"
            seen = {v[0] for v in mine}
            record: dict[str, object] = {
                "tilts": [v[0] for v in mine],
                "visible": [int(t.index in seen) for t in series.included()],
            }
            if params.dimension == "2d":
                record["file"] = f"{stem}_stack2d.mrcs"
                stack = torch.stack([v[1] for v in mine]).numpy()
                write_mrc(stack, out / f"{stem}_stack2d.mrcs", voxel_size_angstrom=pixel, is_stack=True)
            else:
                record["file"], record["weights"] = f"{stem}_data.mrc", f"{stem}_weights.mrc"
                data, weights = subtomogram_3d(
                    torch.stack([v[1] for v in mine]),
                    torch.stack([v[3] for v in mine]),
                    torch.stack([v[2] for v in mine]),
                )
                write_mrc(data.numpy(), out / f"{stem}_data.mrc", voxel_size_angstrom=pixel)
                write_mrc(weights.numpy(), out / f"{stem}_weights.mrc", voxel_size_angstrom=pixel)
            records.append(record)
    return records


def subtomogram_3d(
    boxes: torch.Tensor, rotations: torch.Tensor, transfers: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A 3D pseudo-subtomogram from a particle's centred views: the inverse transform of ``Σ H·X̂`` inserted on the
    ``c³`` grid (the views' rotations, tomogram frame) and the weights ``Σ H²`` as a real ``c³`` volume with the
    transform's origin at the centre voxel ``c // 2`` (RELION's ``_data.mrc`` and ``_weights.mrc``)."""
    import torch

    from tomoforge.averaging import insert_slices

    c = boxes.shape[-1]
    data_sum, weight_sum = insert_slices(boxes, rotations, ctf=transfers, pad_factor=1)
    data = torch.fft.fftshift(torch.fft.irfftn(data_sum, s=(c, c, c)))
    # The full Hermitian grid of the weights: W(−k) = W(k).
    full = torch.zeros((c, c, c), dtype=weight_sum.dtype)
    full[..., : c // 2 + 1] = weight_sum
    minus = (-torch.arange(c)) % c
    for j in range(c // 2 + 1, c):
        full[..., j] = weight_sum[minus][:, minus][..., c - j]
    return data.to(torch.float32), torch.fft.fftshift(full).to(torch.float32)


def write_extraction(
    out: Path,
    particles: ParticleSet,
    results: dict[str, list[dict[str, object] | None]],
    params: Any,
    pixel: float,
) -> None:
    """``particles.json``, ``particles.star`` and ``extraction.json`` of the extracted particles (in input order)."""
    import pandas as pd

    from tomoforge.io.relion5 import RelionParticles, write_relion_particles
    from tomoforge.models import save_json
    from tomoforge.workflow.fsutil import atomic_write_text

    crop = params.crop_size_px or params.box_size_px
    position = {ts_id: 0 for ts_id in results}
    kept, rows, entries = [], [], []
    for k, particle in enumerate(particles.particles):
        records = results.get(particle.ts_id)
        if records is None:
            continue
        record = records[position[particle.ts_id]]
        position[particle.ts_id] += 1
        if record is None:
            continue
        kept.append(particle)
        entries.append({"index": k, "ts_id": particle.ts_id, **record})
        rows.append(
            {
                **({"rlnCtfImage": record["weights"]} if "weights" in record else {}),
                "rlnImageName": record["file"],
                "rlnTomoVisibleFrames": "[" + ",".join(str(v) for v in record["visible"]) + "]",  # type: ignore[attr-defined]
            }
        )
    extracted = particles.model_copy(
        update={"particles": kept, "pixel_size_angstrom": pixel, "box_size_px": crop}
    )
    save_json(extracted, out / "particles.json")
    ungrouped = extracted.model_copy(
        update={"particles": [p.model_copy(update={"group": None}) for p in extracted.particles]}
    )
    write_relion_particles(
        RelionParticles(
            particles=ungrouped,
            extra=pd.DataFrame(rows),
            general={"rlnTomoSubTomosAre2DStacks": int(params.dimension == "2d")},
        ),
        out / "particles.star",
    )
    record = {
        "pixel_size_angstrom": pixel,
        "box_size_px": params.box_size_px,
        "crop_size_px": crop,
        "binning": params.binning,
        "dimension": params.dimension,
        "dropped": len(particles.particles) - len(kept),
        "particles": entries,
    }
    atomic_write_text(out / "extraction.json", json.dumps(record, indent=1) + "\n")
