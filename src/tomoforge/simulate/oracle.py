"""The oracle average of a simulated dataset: the subtomogram average from the raw movies with every truth known.

This is the limit any pipeline can reach on the dataset (``tomoforge score --oracle``). For each tilt of each tilt
series, :func:`oracle_average`

1. **corrects the movie by the true motion and dose-weights it** (:func:`motion_corrected_tilt`): frame ``f`` is
   shifted by ``−s_f`` (the true specimen displacement relative to frame 0, CONVENTIONS.md §8) and weighted by the
   Grant & Grigorieff attenuation ``a_f(k)`` of its own exposure interval (the simulator's damage model), and the
   frames are averaged with weights ``a_f / Σ a_f``, Fourier-cropped to the average's pixel; the result is the
   image contrast ``I/⟨I⟩ − 1`` divided by ``2σ·pixel`` (σ the interaction constant), i.e. in the units of a
   projection ``Σ_z V`` of the map in volts;
2. **locates every true particle** with the true alignment (:func:`tomoforge.geometry.projection_matrices_from_xf`,
   the motion-corrected stack's IMOD transforms) and extracts a box around it, centred to the sub-pixel by a phase
   ramp;
3. **inserts it** (:func:`tomoforge.averaging.insert_slices`) premultiplied by its total transfer
   ``H = CTF(Δf at the particle's depth) · MTF · Q/A`` (``Q = Σ a_f²``, ``A = Σ a_f``; the CTF with the true
   per-tilt defocus and astigmatism, the depth-dependent defocus of :func:`tomoforge.geometry.point_defocus_angstrom`
   and the envelope), with the noise weight ``A²/Q`` (counting noise is white and equal in every frame), so that
   the accumulated weight is ``Q·(CTF·MTF)²``: the optimal (matched-filter) combination of frames and tilts;
4. in the view frame ``(x, y, depth)`` the specimen is seen rotated by ``M = A⁻¹·Ry(θ)·Rx(φ)`` (rows x, y; the
   depth row of ``Ry(θ)·Rx(φ)``), which for the rigid ``A = Rz(−α)`` is ``Rz(α)·Ry(θ)·Rx(φ)`` (CONVENTIONS.md §7),
   and the reference is carried into the specimen by the particle's ``R`` (§4), so the reference as seen in the
   raw image is rotated by ``M·R``;
5. accumulates half sets (the particles' half sets when the file gives them, else by parity of their order),
   applies the point group to the accumulators, and reconstructs each half and the whole with a per-shell Wiener
   constant from the half-map FSC (``W̄_s·(1 − FSC)/FSC``, RELION's ``1/τ²`` in the units of the weights).

The map is in volts (the truth map's units), up to the Wiener filter. The FSCs are computed within a soft sphere of
0.42 box radius (as :func:`tomoforge.simulate.scoring.score_map` does) and, against the truth, also within the true
map's envelope (:func:`envelope_mask`): the true map is one lone particle, while the average of a lattice particle
also holds its neighbours (which touch it) and the membrane, which within the sphere hold the FSC against the truth
at 0.1–0.6 at every resolution on the tiny and demo presets.

References
----------
.. [1] T. Grant & N. Grigorieff (2015). Measuring the optimal exposure for single particle cryo-EM using a 2.6 Å
   reconstruction of rotavirus VP6. eLife 4, e06980. doi:10.7554/eLife.06980 (dose weighting).
.. [2] S. H. W. Scheres (2012). RELION: implementation of a Bayesian approach to cryo-EM structure determination.
   J. Struct. Biol. 180, 519–530. doi:10.1016/j.jsb.2012.09.006 (CTF-weighted Wiener reconstruction, τ² from
   the FSC).
.. [3] P. B. Rosenthal & R. Henderson (2003). Optimal determination of particle orientation, absolute hand, and
   contrast loss in single-particle electron cryomicroscopy. J. Mol. Biol. 333, 721–745.
   doi:10.1016/j.jmb.2003.07.013 (the 0.143 threshold).
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from tomoforge.averaging.fsc import centre_crop_or_pad
from tomoforge.averaging.particles import (
    Optics,
    ParticleAccumulators,
    insert_tilt_particles,
    reconstruct_half_maps,
)
from tomoforge.fourier import fftfreq_grid, shift_phase_ramp_2d
from tomoforge.fourier import frame_dose_weights as fourier_frame_dose_weights
from tomoforge.geometry import projection_matrices_from_xf
from tomoforge.io._atomic import write_text_atomic
from tomoforge.io.convert import read_alignment
from tomoforge.io.imod import imod_defocus_to_ctf, read_imod_defocus
from tomoforge.io.mdoc import read_tilt_series_mdoc
from tomoforge.io.movies import open_movie
from tomoforge.io.mrc import read_mrc, write_mrc
from tomoforge.io.relion5 import read_relion_particles
from tomoforge.simulate.detector import detector_mtf, mtf_at
from tomoforge.simulate.imaging import interaction_constant_rad_per_volt_angstrom
from tomoforge.simulate.scoring.maps import (
    fourier_resize,
    fourier_shell_correlation,
    fsc_resolution_angstrom,
    shell_frequencies_per_angstrom,
    true_map_support,
)
from tomoforge.simulate.scoring.motion import read_motion_csv

__all__ = [
    "OracleAccumulators",
    "OracleAverage",
    "Optics",
    "envelope_mask",
    "finish_oracle",
    "first_crossing_angstrom",
    "frame_dose_weights",
    "insert_tilt_particles",
    "motion_corrected_tilt",
    "oracle_average",
    "run_oracle",
    "tilt_transfer_and_weights",
]

OracleAccumulators = ParticleAccumulators
"""The accumulators of the oracle (:class:`tomoforge.averaging.particles.ParticleAccumulators`)."""

ProgressCallback = Callable[[str, int, int], None]
"""``progress(ts_id, tilts_done, n_tilts)``, called after every tilt."""


class OracleAverage(NamedTuple):
    """The oracle's maps and FSCs."""

    map: torch.Tensor
    """``(b, b, b)`` Wiener-filtered map of all particles, volts."""
    half1: torch.Tensor
    half2: torch.Tensor
    fsc_truth: torch.Tensor | None
    """``(b // 2 + 1,)`` FSC of the map against the true map within the soft sphere of 0.42 box radius (the
    scorer's mask); None without a true map."""
    fsc_half_maps: torch.Tensor
    """``(b // 2 + 1,)`` FSC between the half maps within that sphere."""
    fsc_truth_envelope: torch.Tensor | None
    """``(b // 2 + 1,)`` FSC against the true map within a soft envelope of the true map (:func:`envelope_mask`),
    which leaves out most of what surrounds the particle in the specimen (lattice neighbours, membrane)."""
    frequencies_per_angstrom: torch.Tensor
    pixel_size_angstrom: float
    n_particles: int
    n_views: int
    n_views_outside: int


# ------------------------------------------------------------------------------------------------------------
# Tilt images from movies
# ------------------------------------------------------------------------------------------------------------


def _crop_spectrum(spectrum: torch.Tensor, shape_yx: tuple[int, int]) -> torch.Tensor:
    """The lowest frequencies of an rfft spectrum as the rfft of even-sized ``shape_yx`` images (Nyquist zeroed)."""
    my, mx = shape_yx
    out = torch.cat(
        [spectrum[..., : my // 2, : mx // 2 + 1], spectrum[..., -(my // 2) :, : mx // 2 + 1]], dim=-2
    )
    out[..., my // 2, :] = 0
    out[..., mx // 2] = 0
    return out


def frame_dose_weights(
    freq_per_angstrom: torch.Tensor,
    *,
    n_frames: int,
    prior_dose_e_per_angstrom2: float,
    dose_e_per_angstrom2: float,
    voltage_kv: float,
) -> torch.Tensor:
    """Attenuation ``a_f(k)`` of each frame's exposure interval (the tilt's dose split equally over its frames).

    Returns
    -------
    torch.Tensor
        ``(n_frames, *k)`` weights (:func:`tomoforge.fourier.frame_dose_weights`, mode ``"mean"``).
    """
    return fourier_frame_dose_weights(
        freq_per_angstrom,
        n_frames=n_frames,
        prior_dose_e_per_angstrom2=prior_dose_e_per_angstrom2,
        dose_per_frame_e_per_angstrom2=dose_e_per_angstrom2 / n_frames,
        voltage_kv=voltage_kv,
    )


def motion_corrected_tilt(
    frames: torch.Tensor,
    *,
    shifts_xy_angstrom: torch.Tensor,
    frame_pixel_size_angstrom: float,
    pixel_size_angstrom: float,
    prior_dose_e_per_angstrom2: float,
    dose_e_per_angstrom2: float,
    voltage_kv: float,
) -> torch.Tensor:
    """Dose-weighted, motion-corrected average of a movie's frames, Fourier-binned to ``pixel_size_angstrom``.

    ``Ŷ = Σ_f a_f·ramp(−s_f)·F̂_f / Σ_f a_f`` on the cropped grid: frame ``f`` is moved by ``−s_f`` (content towards
    ``−s``, undoing the specimen displacement) and weighted by its damage attenuation ``a_f(k)``
    (:func:`frame_dose_weights`); ``a_f(0) = 1``, so the mean is the mean frame's.

    Parameters
    ----------
    frames
        ``(n, Y, X)`` frame counts.
    shifts_xy_angstrom
        ``(n, 2)`` specimen displacement of each frame relative to frame 0, Å.
    frame_pixel_size_angstrom, pixel_size_angstrom
        Pixel of the frames and of the result; ``Y·frame/pixel`` and ``X·frame/pixel`` must be even integers.
    prior_dose_e_per_angstrom2, dose_e_per_angstrom2
        Exposure before the tilt and of the whole tilt, e⁻/Å².
    voltage_kv
        For the critical exposure.

    Returns
    -------
    torch.Tensor
        ``(Y', X')`` float32 image in counts per frame pixel per frame, on the frames' device.
    """
    n, ny, nx = frames.shape
    ratio = frame_pixel_size_angstrom / pixel_size_angstrom
    out_shape = (round(ny * ratio), round(nx * ratio))
    if any(abs(m - s * ratio) > 1e-6 * s or m % 2 or m > s for m, s in zip(out_shape, (ny, nx), strict=True)):
        raise ValueError(
            f"frames of {ny}×{nx} at {frame_pixel_size_angstrom} Å do not bin to even sizes at {pixel_size_angstrom} Å"
        )
    device = frames.device
    freq = fftfreq_grid(out_shape, spacing_angstrom=pixel_size_angstrom, device=device, dtype=torch.float32)
    a = frame_dose_weights(
        torch.linalg.vector_norm(freq, dim=-1),
        n_frames=n,
        prior_dose_e_per_angstrom2=prior_dose_e_per_angstrom2,
        dose_e_per_angstrom2=dose_e_per_angstrom2,
        voltage_kv=voltage_kv,
    )
    shifts_px = shifts_xy_angstrom.to(device=device, dtype=torch.float32) / pixel_size_angstrom
    total = torch.zeros((out_shape[0], out_shape[1] // 2 + 1), dtype=torch.complex64, device=device)
    for f in range(n):
        spectrum = _crop_spectrum(torch.fft.rfft2(frames[f].to(torch.float32)), out_shape)
        total += spectrum * shift_phase_ramp_2d(-shifts_px[f], out_shape) * a[f]
    total /= a.sum(dim=0)
    scale = (out_shape[0] * out_shape[1]) / (ny * nx)  # Fourier cropping keeps sums; keep means
    return torch.fft.irfft2(total, s=out_shape) * scale


def tilt_transfer_and_weights(
    shape_yx: tuple[int, int],
    *,
    pixel_size_angstrom: float,
    n_frames: int,
    prior_dose_e_per_angstrom2: float,
    dose_e_per_angstrom2: float,
    voltage_kv: float,
    mtf: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Transfer ``MTF·Q/A`` and noise weight ``A²/Q`` of a :func:`motion_corrected_tilt` image on an rfft grid.

    With ``A = Σ a_f`` and ``Q = Σ a_f²`` the dose-weighted average carries the signal times ``Q/A`` and white
    counting noise of variance ∝ ``Q/A²``.

    Parameters
    ----------
    shape_yx
        Real-space shape of the grid (the particle box as transformed).
    pixel_size_angstrom, n_frames, prior_dose_e_per_angstrom2, dose_e_per_angstrom2, voltage_kv
        As in :func:`motion_corrected_tilt`.
    mtf
        Detector MTF as a function of the frequency in cycles/Å, or None.
    device
        Of the results.

    Returns
    -------
    transfer, weights : torch.Tensor
        ``(h, w // 2 + 1)`` each, float32.
    """
    freq = fftfreq_grid(shape_yx, spacing_angstrom=pixel_size_angstrom, device=device, dtype=torch.float32)
    k = torch.linalg.vector_norm(freq, dim=-1)
    a = frame_dose_weights(
        k,
        n_frames=n_frames,
        prior_dose_e_per_angstrom2=prior_dose_e_per_angstrom2,
        dose_e_per_angstrom2=dose_e_per_angstrom2,
        voltage_kv=voltage_kv,
    )
    a_sum, q_sum = a.sum(dim=0), a.square().sum(dim=0)
    transfer = q_sum / a_sum
    if mtf is not None:
        transfer = transfer * mtf(k)
    return transfer.to(torch.float32), (a_sum.square() / q_sum).to(torch.float32)


# ------------------------------------------------------------------------------------------------------------
# The core: particles of one tilt into the accumulators
# ------------------------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------------------------
# Maps and FSCs
# ------------------------------------------------------------------------------------------------------------


def envelope_mask(truth: torch.Tensor, *, pixel_size_angstrom: float) -> torch.Tensor:
    """A soft mask following a map's molecular envelope: the scorer's support of a true map
    (:func:`~tomoforge.simulate.scoring.maps.true_map_support`: low-pass 5 Å, 10 % of the maximum, dilated by a
    10 Å ball, 5 Å edge), so that the oracle and the scorer measure "in the support" in the same mask.

    Parameters
    ----------
    truth
        ``(b, b, b)`` map, positive density.
    pixel_size_angstrom
        Its voxel size.

    Returns
    -------
    torch.Tensor
        ``(b, b, b)`` mask in [0, 1], dtype of ``truth``.
    """
    return true_map_support(truth, pixel_size_angstrom)


def finish_oracle(
    accumulators: OracleAccumulators,
    *,
    symmetry: str = "C1",
    pixel_size_angstrom: float,
    truth_map: torch.Tensor | None = None,
    n_particles: int = 0,
) -> OracleAverage:
    """Symmetrise the accumulators, reconstruct the half maps and the map, and compute their FSCs.

    The half maps are first reconstructed with a small constant (0.1 % of each shell's mean weight); their FSC
    gives the per-shell Wiener constants of the final reconstruction (module notes).

    Parameters
    ----------
    accumulators
        Filled by :func:`insert_tilt_particles`.
    symmetry
        Point group ``Cn`` or ``Dn`` (:func:`tomoforge.averaging.symmetry_rotations`).
    pixel_size_angstrom
        Voxel of the maps.
    truth_map
        ``(b, b, b)`` true map on the same grid, for the FSC against the truth.
    n_particles
        Recorded in the result.

    Returns
    -------
    OracleAverage
    """
    b = accumulators.box_size_px
    maps = reconstruct_half_maps(accumulators, symmetry=symmetry)
    full, mask = maps.map, maps.mask
    fsc_truth = fsc_envelope = None
    if truth_map is not None:
        truth = truth_map.to(device=full.device, dtype=torch.float64)
        fsc_truth = fourier_shell_correlation(full.double(), truth, mask=mask).cpu()
        envelope = envelope_mask(truth, pixel_size_angstrom=pixel_size_angstrom)
        fsc_envelope = fourier_shell_correlation(full.double(), truth, mask=envelope).cpu()
    return OracleAverage(
        map=full,
        half1=maps.half1,
        half2=maps.half2,
        fsc_truth=fsc_truth,
        fsc_half_maps=maps.fsc_half_maps,
        fsc_truth_envelope=fsc_envelope,
        frequencies_per_angstrom=shell_frequencies_per_angstrom(b, pixel_size_angstrom),
        pixel_size_angstrom=pixel_size_angstrom,
        n_particles=n_particles,
        n_views=accumulators.n_views,
        n_views_outside=accumulators.n_views_outside,
    )


# ------------------------------------------------------------------------------------------------------------
# Datasets
# ------------------------------------------------------------------------------------------------------------


def _truth_on_grid(path: Path, box_size_px: int, pixel_size_angstrom: float) -> torch.Tensor | None:
    """The true map resampled (Fourier) onto the oracle's grid; None when the voxel ratio gives no whole box."""
    volume = read_mrc(path)
    truth = torch.from_numpy(np.array(volume.data, dtype=np.float64))
    pixel = volume.pixel_size_angstrom
    n = truth.shape[-1]
    size = n * pixel / pixel_size_angstrom
    if abs(size - round(size)) > 1e-6 * size:
        return None
    if round(size) != n:
        truth = fourier_resize(truth, round(size))
    return centre_crop_or_pad(truth, box_size_px)


def _half_sets(halves: Sequence[int | None]) -> torch.Tensor:
    """The particles' half sets, or 1, 2, 1, 2, … by their order when any is unassigned."""
    if all(h in (1, 2) for h in halves):
        return torch.tensor([int(h or 0) for h in halves], dtype=torch.int64)
    return torch.arange(len(halves), dtype=torch.int64) % 2 + 1


def oracle_average(
    dataset_dir: str | Path,
    *,
    box_size_px: int | None = None,
    pixel_size_angstrom: float | None = None,
    symmetry: str = "C6",
    max_dose_e_per_angstrom2: float | None = None,
    pad_factor: int = 2,
    oversample_images: bool = False,
    correct_mtf: bool = True,
    device: torch.device | str | None = None,
    progress: ProgressCallback | None = None,
) -> OracleAverage:
    """Reconstruct a simulated dataset's subtomogram average from its raw movies with the true everything.

    Reads ``frames/<ts>.mrc.mdoc`` and the movies, and from ``truth/``: ``truth.json`` (optics, detector,
    handedness), ``motion/<ts>.csv``, ``alignment/<ts>.xf`` (+ ``.tlt``, ``.json``), ``ctf/<ts>.defocus``,
    ``relion5/particles.star`` and ``average/map.mrc`` (module notes).

    Parameters
    ----------
    dataset_dir
        Folder written by :func:`tomoforge.simulate.dataset.generate_dataset`.
    box_size_px
        Box edge of the average; default the true map's (at its voxel, scaled to ``pixel_size_angstrom``).
    pixel_size_angstrom
        Voxel of the average; default the true map's. The frames must Fourier-bin to it (even sizes).
    symmetry
        Point group applied (``C6`` for the CA-SP1 hexamer; ``C1`` for none).
    max_dose_e_per_angstrom2
        Leave out tilts whose prior exposure exceeds this (e⁻/Å²); None: every tilt.
    pad_factor, oversample_images
        Of :func:`tomoforge.averaging.insert_slices`. Oversampling the boxes costs ``pad_factor²`` times the insertion
        work (4–8× the time on two cores) for little: on the demo preset the envelope FSC rose by at most 0.02 up
        to 12 Å (0.06 in the last two shells) and its 0.143 crossing moved by 0.01 Å; it is off by default.
    correct_mtf
        Include the detector MTF in the transfer, so that the map's amplitudes approach the truth's (on the demo
        preset the map is 0.82 times the true map within its envelope, the rest being the Wiener filter and the
        blur of the simulation's own sampling).
    device
        Torch device of the computation (default CPU).
    progress
        Called as ``progress(ts_id, tilts_done, n_tilts)`` after each tilt.

    Returns
    -------
    OracleAverage
    """
    root = Path(dataset_dir)
    truth_dir = root / "truth"
    document = json.loads((truth_dir / "truth.json").read_text())
    config = document["config"]
    truth_map_path = truth_dir / "average" / "map.mrc"
    truth_volume = read_mrc(truth_map_path)
    pixel = float(pixel_size_angstrom or truth_volume.pixel_size_angstrom)
    if box_size_px is None:
        box = round(truth_volume.shape[-1] * truth_volume.pixel_size_angstrom / pixel)
        box += box % 2
    else:
        box = int(box_size_px)
    device = torch.device(device) if device is not None else torch.device("cpu")
    optics = Optics(
        voltage_kv=float(config["voltage_kv"]),
        spherical_aberration_mm=float(config["spherical_aberration_mm"]),
        amplitude_contrast=float(config["amplitude_contrast"]),
        b_factor_angstrom2=float(config.get("envelope_b_factor_angstrom2", 0.0)),
    )
    frame_pixel = float(document["frame_pixel_size_angstrom"])
    mtf: Callable[[torch.Tensor], torch.Tensor] | None = None
    if correct_mtf and config.get("detector_mtf"):
        curve = detector_mtf(str(config["detector_mtf"]))
        detector_pixel = frame_pixel * (2.0 if config.get("super_resolution", False) else 1.0)

        def mtf(k: torch.Tensor) -> torch.Tensor:
            return mtf_at(k * detector_pixel, curve)

    units = 2.0 * interaction_constant_rad_per_volt_angstrom(optics.voltage_kv) * pixel
    particle_file = read_relion_particles(truth_dir / "relion5" / "particles.star").particles
    all_ts = particle_file.ts_ids()
    positions_all = torch.from_numpy(particle_file.positions_angstrom()) / pixel
    rotations_all = torch.from_numpy(particle_file.rotation_matrices())
    halves_all = _half_sets([p.half_set for p in particle_file.particles])
    accumulators = OracleAccumulators(box, pad_factor, oversample_images, device)
    g = accumulators.transform_size
    for ts_id, record in document["tilt_series"].items():
        mine = torch.tensor([i for i, t in enumerate(all_ts) if t == ts_id], dtype=torch.int64)
        if mine.numel() == 0:
            continue
        series = read_tilt_series_mdoc(root / "frames" / f"{ts_id}.mrc.mdoc")
        sidecar = json.loads((truth_dir / "alignment" / f"{ts_id}.json").read_text())
        alignment = read_alignment(
            truth_dir / "alignment" / f"{ts_id}.xf",
            pixel_size_angstrom=float(sidecar["pixel_size_angstrom"]),
            image_size_xy=sidecar["image_size_xy"],
        )
        if alignment.n_tilts != series.n_tilts:
            raise ValueError(
                f"{ts_id}: the alignment has {alignment.n_tilts} views, the mdoc {series.n_tilts}"
            )
        nominal = alignment.nominal_tilt_angles_deg
        if (
            nominal is not None
            and max(abs(a - t.tilt_angle_deg) for a, t in zip(nominal, series.tilts, strict=True)) > 0.5
        ):
            raise ValueError(f"{ts_id}: the alignment's views and the mdoc's tilts are not in the same order")
        excluded = set(sidecar.get("excluded_views", [])) | {i for i, e in enumerate(alignment.excluded) if e}
        ctfs = imod_defocus_to_ctf(
            read_imod_defocus(truth_dir / "ctf" / f"{ts_id}.defocus"), ts_id, series.n_tilts
        ).by_index()
        motion = read_motion_csv(truth_dir / "motion" / f"{ts_id}.csv")
        handedness = int(record.get("handedness", 1))
        transforms = [alignment.transforms[i] for i in range(series.n_tilts)]
        a_matrices = torch.tensor(
            [[[t.a11, t.a12], [t.a21, t.a22]] if t else [[1.0, 0.0], [0.0, 1.0]] for t in transforms],
            dtype=torch.float64,
        )
        d_px = torch.tensor([[t.dx_angstrom, t.dy_angstrom] if t else [0.0, 0.0] for t in transforms]) / pixel
        matrices = projection_matrices_from_xf(
            a_matrices,
            d_px.to(torch.float64),
            list(alignment.tilt_angles_deg),
            list(alignment.x_tilt_angles_deg),
        )
        for done, tilt in enumerate(series.tilts, start=1):
            estimate = ctfs.get(tilt.index)
            defocus = estimate.parameters if estimate is not None else None
            dose_ok = (
                max_dose_e_per_angstrom2 is None
                or tilt.prior_dose_e_per_angstrom2 <= max_dose_e_per_angstrom2
            )
            if defocus is not None and tilt.index not in excluded and dose_ok:
                movie_path = Path(tilt.frames_file)
                if not movie_path.is_file():
                    movie_path = root / "frames" / movie_path.name
                with open_movie(movie_path) as movie:
                    frames = torch.from_numpy(movie.read_frames()).to(device)
                track = motion[tilt.acquisition_order]
                n_frames = int(frames.shape[0])
                shifts = torch.zeros((n_frames, 2), dtype=torch.float64)
                shifts[torch.from_numpy(track.frames)] = torch.from_numpy(track.shifts_xy_angstrom)
                dose = dict(
                    prior_dose_e_per_angstrom2=tilt.prior_dose_e_per_angstrom2,
                    dose_e_per_angstrom2=tilt.dose_e_per_angstrom2,
                    voltage_kv=optics.voltage_kv,
                )
                averaged = motion_corrected_tilt(
                    frames,
                    shifts_xy_angstrom=shifts,
                    frame_pixel_size_angstrom=frame_pixel,
                    pixel_size_angstrom=pixel,
                    **dose,
                )
                image = (averaged / averaged.mean() - 1.0) / units
                transfer, weights = tilt_transfer_and_weights(
                    (g, g), pixel_size_angstrom=pixel, n_frames=n_frames, mtf=mtf, device=device, **dose
                )
                insert_tilt_particles(
                    accumulators,
                    image,
                    projection_matrix=matrices[tilt.index],
                    positions_xyz_px=positions_all[mine],
                    rotations=rotations_all[mine],
                    half_sets=halves_all[mine],
                    defocus=defocus,
                    optics=optics,
                    pixel_size_angstrom=pixel,
                    handedness=handedness,
                    transfer=transfer,
                    weights=weights,
                )
            if progress is not None:
                progress(ts_id, done, series.n_tilts)
    truth_map = _truth_on_grid(truth_map_path, box, pixel)
    return finish_oracle(
        accumulators,
        symmetry=symmetry,
        pixel_size_angstrom=pixel,
        truth_map=None if truth_map is None else truth_map.to(device),
        n_particles=len(all_ts),
    )


def first_crossing_angstrom(
    fsc: torch.Tensor,
    frequencies_per_angstrom: torch.Tensor,
    threshold: float,
    *,
    from_angstrom: float = math.inf,
) -> float:
    """Resolution where an FSC first falls below ``threshold``, searching only at resolutions finer than
    ``from_angstrom`` (:func:`tomoforge.simulate.scoring.fsc_resolution_angstrom` on those shells).

    Returns
    -------
    float
        Å; Nyquist when it never falls below, infinity when the first shell searched is already below.
    """
    keep = torch.nonzero(frequencies_per_angstrom > 1.0 / from_angstrom).squeeze(1)
    if keep.numel() == 0 or int(keep[0]) == 0:
        return fsc_resolution_angstrom(fsc, frequencies_per_angstrom, threshold) if keep.numel() else math.inf
    first = int(keep[0])
    # A stand-in for DC (above any threshold) one shell before the first one searched.
    values = torch.cat([torch.ones(1, dtype=fsc.dtype), fsc[first:]])
    return fsc_resolution_angstrom(values, frequencies_per_angstrom[first - 1 :], threshold)


def _write_fsc_csv(result: OracleAverage, path: Path) -> None:
    columns = {
        "fsc_half_maps": result.fsc_half_maps,
        "fsc_truth": result.fsc_truth,
        "fsc_truth_envelope": result.fsc_truth_envelope,
    }
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["shell", "frequency_per_angstrom", "resolution_angstrom", *columns])
        for s, f in enumerate(result.frequencies_per_angstrom.tolist()):
            values = ["" if v is None else f"{float(v[s]):.6f}" for v in columns.values()]
            writer.writerow([s, f"{f:.6g}", f"{1.0 / f:.6g}" if f > 0 else "inf", *values])


def run_oracle(
    dataset_dir: str | Path, out_dir: str | Path, *, context_angstrom: float = 70.0, **options: Any
) -> dict[str, Any]:
    """Run :func:`oracle_average` and write the export layout's ``average/`` folder.

    Writes ``out_dir/oracle.json`` (the returned numbers), ``out_dir/average/map.mrc``, ``half1.mrc``,
    ``half2.mrc`` (voxel size in the header) and
    ``average/fsc.csv`` (columns ``shell, frequency_per_angstrom, resolution_angstrom, fsc_half_maps, fsc_truth,
    fsc_truth_envelope``), so that :func:`tomoforge.simulate.scoring.score_map` scores the oracle like any result.

    Parameters
    ----------
    dataset_dir
        The simulated dataset.
    out_dir
        The results folder (created).
    context_angstrom
        The envelope FSC's 0.143 crossing is searched at finer resolutions only: coarser than this the average
        of a lattice particle is dominated by its surroundings (neighbours touching it, the membrane), which the
        lone true particle lacks.
    **options
        Keyword options of :func:`oracle_average`.

    Returns
    -------
    dict
        ``pixel_size_angstrom``, ``box_size_px``, ``symmetry``, ``n_particles``, ``n_views`` (particle images
        inserted), ``n_views_outside`` (boxes not wholly inside their tilt), resolutions in Å
        (``half_maps_fsc_0_143``: the half maps; ``truth_fsc_0_5``/``truth_fsc_0_143``: against the truth in the
        scorer's sphere; ``truth_envelope_fsc_0_143``: against the truth in its envelope, finer than
        ``context_angstrom``), ``elapsed_s`` and ``views_per_s``.
    """
    start = time.perf_counter()
    result = oracle_average(dataset_dir, **options)
    elapsed = time.perf_counter() - start
    average = Path(out_dir) / "average"
    average.mkdir(parents=True, exist_ok=True)
    pixel = result.pixel_size_angstrom
    for name, volume in (("map", result.map), ("half1", result.half1), ("half2", result.half2)):
        data = volume.detach().cpu().numpy().astype(np.float32)
        write_mrc(data, average / f"{name}.mrc", voxel_size_angstrom=pixel)
    _write_fsc_csv(result, average / "fsc.csv")
    freqs = result.frequencies_per_angstrom
    numbers: dict[str, Any] = {
        "pixel_size_angstrom": pixel,
        "box_size_px": int(result.map.shape[-1]),
        "symmetry": str(options.get("symmetry", "C6")).upper(),
        "n_particles": result.n_particles,
        "n_views": result.n_views,
        "n_views_outside": result.n_views_outside,
        "resolution_half_maps_fsc_0_143_angstrom": fsc_resolution_angstrom(
            result.fsc_half_maps, freqs, 0.143
        ),
        "resolution_truth_fsc_0_5_angstrom": None,
        "resolution_truth_fsc_0_143_angstrom": None,
        "resolution_truth_envelope_fsc_0_143_angstrom": None,
        "elapsed_s": elapsed,
        "views_per_s": result.n_views / elapsed if elapsed > 0 else math.inf,
    }
    if result.fsc_truth is not None and result.fsc_truth_envelope is not None:
        numbers["resolution_truth_fsc_0_5_angstrom"] = fsc_resolution_angstrom(result.fsc_truth, freqs, 0.5)
        numbers["resolution_truth_fsc_0_143_angstrom"] = fsc_resolution_angstrom(
            result.fsc_truth, freqs, 0.143
        )
        numbers["resolution_truth_envelope_fsc_0_143_angstrom"] = first_crossing_angstrom(
            result.fsc_truth_envelope, freqs, 0.143, from_angstrom=context_angstrom
        )
    write_text_atomic(Path(out_dir) / "oracle.json", json.dumps(numbers, indent=2, default=str) + "\n")
    return numbers
