"""Particle picking and orientation error: picks matched to the true particles within a distance.

Matching is greedy by distance (closest pairs first, each particle used once), which for well separated particles
(lattice spacing ~75 Å, threshold below half of it) gives the same pairs as an optimal assignment. Distances come
from :func:`torch.cdist` in chunks, so memory stays bounded for large sets. Orientations are compared by the angle
between the particle axes ``R·ẑ`` and by the full rotation angle modulo the point group, acting on the reference
(``R`` and ``R·S`` describe the same particle for every symmetry operator ``S``, CONVENTIONS.md §4).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from pydantic import Field

from tomoforge.averaging import symmetry_rotations
from tomoforge.io.relion5 import read_relion_particles
from tomoforge.simulate.scoring._common import NotProvided, Scored

__all__ = [
    "PickingScore",
    "PickingTiltSeriesScore",
    "PointMatches",
    "match_points",
    "orientation_errors_deg",
    "score_picking",
    "symmetry_operators",
]


class PointMatches(NamedTuple):
    """Result of :func:`match_points`."""

    reference_indices: torch.Tensor
    """``(m,)`` indices into the reference points."""
    query_indices: torch.Tensor
    """``(m,)`` indices into the query points."""
    distances: torch.Tensor
    """``(m,)`` distances of the pairs."""


def match_points(
    reference_xyz: torch.Tensor,
    query_xyz: torch.Tensor,
    *,
    max_distance: float,
    chunk_size: int = 4096,
) -> PointMatches:
    """Greedy one-to-one matching of two point sets, closest pairs first, within ``max_distance``.

    Parameters
    ----------
    reference_xyz, query_xyz
        ``(n, 3)`` and ``(k, 3)`` points in the same unit.
    max_distance
        Pairs farther apart are never matched.
    chunk_size
        Query points per :func:`torch.cdist` block.

    Returns
    -------
    PointMatches
        Pairs sorted by distance.
    """
    ref = reference_xyz.to(torch.float64)
    qry = query_xyz.to(ref)
    empty = torch.zeros(0, dtype=torch.long, device=ref.device)
    if len(ref) == 0 or len(qry) == 0:
        return PointMatches(empty, empty, torch.zeros(0, dtype=ref.dtype, device=ref.device))
    rows, cols, dists = [], [], []
    for start in range(0, len(qry), chunk_size):
        d = torch.cdist(qry[start : start + chunk_size], ref)
        q, r = torch.nonzero(d <= max_distance, as_tuple=True)
        rows.append(r)
        cols.append(q + start)
        dists.append(d[q, r])
    r_all, q_all, d_all = torch.cat(rows), torch.cat(cols), torch.cat(dists)
    order = torch.argsort(d_all, stable=True)
    used_r = torch.zeros(len(ref), dtype=torch.bool, device=ref.device)
    used_q = torch.zeros(len(qry), dtype=torch.bool, device=ref.device)
    keep = []
    for k in order.tolist():
        i_r, i_q = int(r_all[k]), int(q_all[k])
        if not used_r[i_r] and not used_q[i_q]:
            used_r[i_r] = used_q[i_q] = True
            keep.append(k)
    idx = torch.tensor(keep, dtype=torch.long, device=ref.device)
    return PointMatches(r_all[idx], q_all[idx], d_all[idx])


def symmetry_operators(symmetry: str, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Rotations of a cyclic or dihedral point group (RELION's setting: the n-fold axis along z, a 2-fold along x).

    Same as :func:`tomoforge.averaging.symmetry_rotations` (on the default device).

    Parameters
    ----------
    symmetry
        ``"C<n>"`` or ``"D<n>"`` (case-insensitive).

    Returns
    -------
    torch.Tensor
        ``(n, 3, 3)`` for Cn, ``(2n, 3, 3)`` for Dn.

    Raises
    ------
    ValueError
        For other point groups.
    """
    return symmetry_rotations(symmetry, dtype=dtype)


def orientation_errors_deg(
    true_rotations: torch.Tensor, estimated_rotations: torch.Tensor, *, symmetry: str = "C1"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis and full-rotation errors between particle orientations.

    Parameters
    ----------
    true_rotations, estimated_rotations
        ``(..., 3, 3)`` rotations mapping the reference box into the tomogram.
    symmetry
        Point group of the particle (``Cn`` or ``Dn``).

    Returns
    -------
    tuple of torch.Tensor
        ``(...)`` angle between ``R_true·ẑ`` and ``R_est·ẑ`` in [0°, 180°], and ``min_S angle(R_trueᵀ·R_est·S)``
        in [0°, 180°].
    """
    r_true = true_rotations.to(torch.float64)
    r_est = estimated_rotations.to(r_true)
    axis_cos = (r_true[..., :, 2] * r_est[..., :, 2]).sum(-1).clamp(-1.0, 1.0)
    relative = r_true.transpose(-1, -2) @ r_est
    ops = symmetry_operators(symmetry).to(r_true)
    traces = (relative.unsqueeze(-3) @ ops).diagonal(dim1=-2, dim2=-1).sum(-1)
    angles = torch.acos(((traces - 1.0) / 2.0).clamp(-1.0, 1.0)).amin(dim=-1)
    return torch.rad2deg(torch.acos(axis_cos)), torch.rad2deg(angles)


class PickingTiltSeriesScore(Scored):
    """Picking numbers of one tomogram."""

    ts_id: str = Field(description="Tilt-series id.")
    n_truth: int = Field(description="True particles.")
    n_picked: int = Field(description="Particles in the results.")
    n_matched: int = Field(description="Picks within the distance threshold of a true particle.")
    recall: float = Field(description="n_matched / n_truth.")
    precision: float = Field(description="n_matched / n_picked (1 when nothing was picked).")
    frame_corrected: bool = Field(
        description="Whether the alignment's rigid frame transform was undone first."
    )


class PickingScore(Scored):
    """Picking and orientation scores over all tomograms."""

    distance_threshold_angstrom: float = Field(description="Largest distance of a match, Å.")
    symmetry: str = Field(description="Point group used for the rotation error.")
    n_truth: int = Field(description="True particles.")
    n_picked: int = Field(description="Picked particles.")
    n_matched: int = Field(description="Matched picks.")
    recall: float = Field(description="n_matched / n_truth.")
    precision: float = Field(description="n_matched / n_picked.")
    f1: float = Field(description="Harmonic mean of recall and precision.")
    rms_position_error_angstrom: float | None = Field(description="RMS distance of matched pairs, Å.")
    median_axis_error_deg: float | None = Field(description="Median angle between true and estimated R·ẑ.")
    median_rotation_error_deg: float | None = Field(
        description="Median full rotation error modulo the symmetry (None where mirrored alignments make it "
        "undefined)."
    )
    tilt_series: list[PickingTiltSeriesScore] = Field(description="Per tomogram.")


def _f1(recall: float, precision: float) -> float:
    return 0.0 if recall + precision == 0 else 2.0 * recall * precision / (recall + precision)


def score_picking(
    truth_path: str | Path,
    results_path: str | Path,
    *,
    distance_threshold_angstrom: float = 37.5,
    symmetry: str = "C6",
    frames: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> PickingScore | NotProvided:
    """Score picked particles (RELION 5 ``particles.star``) against the true particles.

    Parameters
    ----------
    truth_path, results_path
        ``relion5/particles.star`` of the truth and the results.
    distance_threshold_angstrom
        Largest distance between a pick and its true particle, Å.
    symmetry
        Point group for the rotation error.
    frames
        Per tilt series, the rigid map ``X_est = M·X_true + t`` (``M`` ``(3, 3)``, ``t`` ``(3,)`` Å) between the
        truth's and the results' specimen frames, as fitted by the alignment score; picks are mapped back with
        it before matching. When ``M`` is a reflection the rotation error is not computed.

    Returns
    -------
    PickingScore or NotProvided
    """
    results = Path(results_path)
    if not results.is_file():
        return NotProvided(reason="the results have no relion5/particles.star")
    symmetry_operators(symmetry)  # validate early
    truth = read_relion_particles(truth_path).particles
    estimate = read_relion_particles(results).particles
    frames = frames or {}
    per_ts, distances, axis_err, rot_err = [], [], [], []
    ts_ids = sorted({p.ts_id for p in truth.particles} | {p.ts_id for p in estimate.particles})
    for ts in ts_ids:
        t_parts = [p for p in truth.particles if p.ts_id == ts]
        e_parts = [p for p in estimate.particles if p.ts_id == ts]
        t_pos = torch.tensor([p.position_angstrom for p in t_parts], dtype=torch.float64).reshape(-1, 3)
        e_pos = torch.tensor([p.position_angstrom for p in e_parts], dtype=torch.float64).reshape(-1, 3)
        t_rot = torch.tensor(np.array([p.rotation() for p in t_parts]), dtype=torch.float64).reshape(-1, 3, 3)
        e_rot = torch.tensor(np.array([p.rotation() for p in e_parts]), dtype=torch.float64).reshape(-1, 3, 3)
        frame = frames.get(ts)
        mirrored = False
        if frame is not None:
            m = torch.as_tensor(frame[0], dtype=torch.float64)
            t = torch.as_tensor(frame[1], dtype=torch.float64)
            m_inv = torch.linalg.inv(m)
            e_pos = (e_pos - t) @ m_inv.T
            e_rot = m_inv @ e_rot
            mirrored = bool(torch.linalg.det(m) < 0)
        matches = match_points(t_pos, e_pos, max_distance=distance_threshold_angstrom)
        n_m = len(matches.distances)
        if n_m:
            distances.append(matches.distances)
            axis, full = orientation_errors_deg(
                t_rot[matches.reference_indices], e_rot[matches.query_indices], symmetry=symmetry
            )
            axis_err.append(axis)
            if not mirrored:
                rot_err.append(full)
        per_ts.append(
            PickingTiltSeriesScore(
                ts_id=ts,
                n_truth=len(t_parts),
                n_picked=len(e_parts),
                n_matched=n_m,
                recall=n_m / len(t_parts) if t_parts else 1.0,
                precision=n_m / len(e_parts) if e_parts else 1.0,
                frame_corrected=frame is not None,
            )
        )
    n_truth, n_picked = len(truth.particles), len(estimate.particles)
    n_matched = sum(s.n_matched for s in per_ts)
    recall = n_matched / n_truth if n_truth else 1.0
    precision = n_matched / n_picked if n_picked else 1.0
    d = torch.cat(distances) if distances else None
    return PickingScore(
        distance_threshold_angstrom=distance_threshold_angstrom,
        symmetry=symmetry.upper(),
        n_truth=n_truth,
        n_picked=n_picked,
        n_matched=n_matched,
        recall=recall,
        precision=precision,
        f1=_f1(recall, precision),
        rms_position_error_angstrom=float(d.square().mean().sqrt()) if d is not None else None,
        median_axis_error_deg=float(torch.cat(axis_err).quantile(0.5)) if axis_err else None,
        median_rotation_error_deg=float(torch.cat(rot_err).quantile(0.5)) if rot_err else None,
        tilt_series=per_ts,
    )
