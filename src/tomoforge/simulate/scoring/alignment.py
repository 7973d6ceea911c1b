"""Tilt-series alignment error: reprojection of the true gold beads with the estimated and the true geometry.

Two alignments of the same data may describe specimens that differ by a rigid motion (a tomogram rotated by a
constant tilt offset, shifted in z, rotated by 180° about z together with negated tilt angles, or mirrored when the
tilt angles' sign is inverted) and still produce identical reconstructions up to that motion. The score therefore
first fits the rigid transform ``T`` (rotation or, if it fits much better, rotation-reflection, plus translation)
that minimises ``Σ‖P_est(T·X) − P_true(X)‖²`` over the true 3D gold positions ``X`` and all views (Levenberg-
Marquardt on six parameters, several starts), and reports what is left: the reprojection error per view and
overall. The projection model is CONVENTIONS.md §7, from IMOD ``.xf``/``.tlt`` (``.xtilt`` when present) through
:func:`tomoforge.geometry.projection_matrices_from_xf`; every length is worked in Å and reported in truth pixels.

References
----------
Triggs, B., McLauchlan, P. F., Hartley, R. I. & Fitzgibbon, A. W. (2000). Bundle adjustment — a modern synthesis.
Vision Algorithms: Theory and Practice, LNCS 1883, 298–372. doi:10.1007/3-540-44480-7_21 (Levenberg-Marquardt with
incremental rotation updates, as used here for the rigid fit).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from pydantic import Field

from tomoforge.geometry import project_points, projection_matrices_from_xf, rotation_x, rotation_y, rotation_z
from tomoforge.io import FormatError
from tomoforge.io.convert import Alignment, read_alignment
from tomoforge.simulate.scoring._common import (
    NotProvided,
    Scored,
    circular_mean_deg,
    read_csv_columns,
    rotation_angle_deg,
    rotation_from_vector,
    skew,
    wrap_deg,
)

__all__ = [
    "AlignmentScore",
    "AlignmentViewScore",
    "ExportAlignment",
    "RigidFit",
    "TiltAngleErrors",
    "fit_rigid_specimen_transform",
    "read_export_alignment",
    "read_gold_csv",
    "rotation_from_vector",
    "score_alignment",
    "tilt_angle_errors",
    "tilt_axis_angles_deg",
]

_MIRROR_Z = (1.0, 1.0, -1.0)


class RigidFit(NamedTuple):
    """Result of :func:`fit_rigid_specimen_transform`."""

    matrix: torch.Tensor
    """``(3, 3)`` linear part of ``T`` (a rotation, or a rotation times a z mirror when ``mirrored``)."""
    translation_xyz: torch.Tensor
    """``(3,)`` translation of ``T``, units of the points."""
    residuals_xy: torch.Tensor
    """``(t, n, 2)`` ``P_est(T·X) − P_true(X)`` of every view and point."""
    mirrored: bool
    """Whether ``T`` is a reflection (det −1)."""


def _levenberg_marquardt(
    points: torch.Tensor,
    linear: torch.Tensor,
    offsets: torch.Tensor,
    target: torch.Tensor,
    rotation: torch.Tensor,
    iterations: int,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Minimise ``Σ‖L_i·(R·X + t) + o_i − u_i‖²`` over the rotation ``R`` (left updates) and ``t``."""
    translation = torch.zeros(3, dtype=points.dtype, device=points.device)

    def residual(r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (points @ r.T + t) @ linear.transpose(-1, -2) + offsets.unsqueeze(-2) - target

    res = residual(rotation, translation)
    cost = float(res.square().sum())
    damping = 1e-4
    for _ in range(iterations):
        y = points @ rotation.T
        j_rot = -linear.unsqueeze(1) @ skew(y).unsqueeze(0)  # (t, n, 2, 3)
        j_t = linear.unsqueeze(1).expand_as(j_rot)
        jac = torch.cat([j_rot, j_t], dim=-1).reshape(-1, 6)
        hess = jac.T @ jac
        grad = jac.T @ res.reshape(-1)
        diag = hess.diagonal().clamp_min(1e-12 * float(hess.diagonal().max().clamp_min(1e-300)))
        improved, converged = False, False
        for _ in range(12):
            step = torch.linalg.solve(hess + damping * torch.diag(diag), -grad)
            cand_r = rotation_from_vector(step[:3]) @ rotation
            cand_t = translation + step[3:]
            cand_res = residual(cand_r, cand_t)
            cand_cost = float(cand_res.square().sum())
            if cand_cost <= cost:
                rotation, translation, res = cand_r, cand_t, cand_res
                converged = cost - cand_cost <= 1e-15 * max(cost, 1e-300) or float(step.abs().max()) < 1e-13
                cost = cand_cost
                damping = max(damping / 10.0, 1e-12)
                improved = True
                break
            damping *= 10.0
        if not improved or converged:
            break
    return rotation, translation, cost


def fit_rigid_specimen_transform(
    points_xyz: torch.Tensor,
    estimated_matrices: torch.Tensor,
    true_matrices: torch.Tensor,
    *,
    allow_mirror: bool = True,
    iterations: int = 100,
) -> RigidFit:
    """Rigid transform of the specimen that best reconciles two tilt geometries.

    Finds ``T·X = M·X + t`` minimising ``Σ_i Σ_k ‖P_est,i(T·X_k) − P_true,i(X_k)‖²`` (image ``x, y`` only), with
    ``M`` a rotation, or a rotation times a z mirror if that halves the cost (an alignment whose tilt angles have
    the opposite sign describes the mirror image of the specimen). Levenberg-Marquardt from the four rotations of
    the Klein group ``{I, Rx(180°), Ry(180°), Rz(180°)}``, keeping the best, so that an alignment whose tilt-axis
    angle differs by 180° is found too.

    Parameters
    ----------
    points_xyz
        ``(n, 3)`` specimen points (e.g. true gold positions), relative to the tomogram centre.
    estimated_matrices, true_matrices
        ``(t, 3, 4)`` projection matrices (:func:`tomoforge.geometry.projection_matrices_from_xf`), in the unit
        of the points.
    allow_mirror
        Also try reflections.
    iterations
        Most iterations per start.

    Returns
    -------
    RigidFit
    """
    p = points_xyz.to(torch.float64)
    est = estimated_matrices.to(p)
    target = project_points(p, true_matrices.to(p))[..., :2]
    linear, offsets = est[:, :2, :3], est[:, :2, 3]
    starts = torch.cat(
        [torch.eye(3, dtype=p.dtype, device=p.device).unsqueeze(0), rotation_x(180.0).to(p).unsqueeze(0)]
        + [rotation_y(180.0).to(p).unsqueeze(0), rotation_z(180.0).to(p).unsqueeze(0)]
    )
    best: dict[bool, tuple[float, torch.Tensor, torch.Tensor]] = {}
    mirror = torch.diag(torch.tensor(_MIRROR_Z, dtype=p.dtype, device=p.device))
    for mirrored in (False, True) if allow_mirror else (False,):
        pts = p @ mirror.T if mirrored else p
        for start in starts:
            r, t, cost = _levenberg_marquardt(pts, linear, offsets, target, start, iterations)
            if mirrored not in best or cost < best[mirrored][0]:
                best[mirrored] = (cost, r @ mirror if mirrored else r, t)
    cost, matrix, translation = best[False]
    mirrored = False
    if True in best:
        cost_m = best[True][0]
        if cost_m < 0.5 * cost and cost - cost_m > 1e-9 * target.numel():
            cost, matrix, translation = best[True]
            mirrored = True
    residuals = project_points(p @ matrix.T + translation, est)[..., :2] - target
    return RigidFit(matrix=matrix, translation_xyz=translation, residuals_xy=residuals, mirrored=mirrored)


def tilt_axis_angles_deg(xf_matrices: torch.Tensor) -> torch.Tensor:
    """Tilt-axis angle of raw → aligned transforms, ``atan2(A12, A11)`` (CONVENTIONS.md §6).

    Parameters
    ----------
    xf_matrices
        ``(..., 2, 2)`` linear parts of ``.xf`` transforms.

    Returns
    -------
    torch.Tensor
        ``(...)`` angles in degrees, in (−180°, 180°].
    """
    return torch.rad2deg(torch.atan2(xf_matrices[..., 0, 1], xf_matrices[..., 0, 0]))


class TiltAngleErrors(NamedTuple):
    """Result of :func:`tilt_angle_errors`."""

    offset_deg: float
    """Mean difference ``(±θ_est) − θ_true``."""
    residuals_deg: torch.Tensor
    """``(t,)`` per-view differences after removing the offset."""
    negated: bool
    """Whether the estimated angles have the opposite sign (compared as ``−θ_est``)."""


def tilt_angle_errors(true_angles_deg: torch.Tensor, estimated_angles_deg: torch.Tensor) -> TiltAngleErrors:
    """Tilt-angle errors after removing a constant offset.

    The estimate is compared as ``−θ_est`` instead when that explains it far better (a quarter of the variance),
    i.e. when the estimate uses the opposite tilt sign.

    Parameters
    ----------
    true_angles_deg, estimated_angles_deg
        ``(t,)`` tilt angles of the same views.

    Returns
    -------
    TiltAngleErrors
    """
    diff = estimated_angles_deg - true_angles_deg
    flipped = -estimated_angles_deg - true_angles_deg
    negated = bool(flipped.var(correction=0) < 0.25 * diff.var(correction=0)) if diff.numel() > 1 else False
    errors = flipped if negated else diff
    offset = errors.mean()
    return TiltAngleErrors(offset_deg=float(offset), residuals_deg=errors - offset, negated=negated)


def read_gold_csv(path: str | Path) -> np.ndarray:
    """Read ``gold/<ts>.csv``: ``(n, 3)`` bead centres ``(x, y, z)`` in Å from the tomogram centre."""
    p = Path(path)
    table = read_csv_columns(p, ("x_angstrom", "y_angstrom", "z_angstrom"))
    points = np.stack([table["x_angstrom"], table["y_angstrom"], table["z_angstrom"]], axis=-1)
    if len(points) == 0:
        raise FormatError(p, "holds no gold beads")
    return points


class ExportAlignment(NamedTuple):
    """One tilt series' alignment as read from an export-layout folder."""

    alignment: Alignment
    """Per view in stack order (transforms with shifts in Å about tomoforge centres)."""
    excluded: frozenset[int]
    """0-based stack indices the folder excludes."""
    pixel_size_angstrom: float
    """Pixel size of the images the alignment refers to."""
    source: str
    """The file read, relative to the folder."""
    notes: list[str]
    """Assumptions made while reading."""


def read_export_alignment(
    folder: str | Path, ts_id: str, *, fallback_json: Path | None = None
) -> ExportAlignment | None:
    """Read one tilt series' alignment from an export-layout folder, or None when it has none.

    ``alignment/<ts>.xf`` (+ ``.tlt``, ``.xtilt`` and the ``.json`` with pixel size, image size and excluded
    views) is preferred; otherwise ``relion5/tilt_series/<ts>.star`` with ``relion5/tomograms.star``.

    Parameters
    ----------
    folder
        The truth or results folder.
    ts_id
        Tilt-series id.
    fallback_json
        A sidecar ``.json`` to use when the folder's own is missing (the truth's, for results).
    """
    root = Path(folder)
    xf = root / "alignment" / f"{ts_id}.xf"
    notes: list[str] = []
    if xf.is_file():
        sidecar = xf.with_suffix(".json")
        if not sidecar.is_file() and fallback_json is not None and fallback_json.is_file():
            notes.append(f"no alignment/{ts_id}.json: the truth's pixel and image size were used")
            sidecar = fallback_json
        if not sidecar.is_file():
            raise FormatError(xf, f"has no {ts_id}.json beside it (pixel_size_angstrom, image_size_xy)")
        meta = _read_sidecar(sidecar)
        alignment = read_alignment(xf, pixel_size_angstrom=meta[0], image_size_xy=meta[1], ts_id=ts_id)
        return ExportAlignment(alignment, meta[2], meta[0], f"alignment/{ts_id}.xf", notes)
    star = root / "relion5" / "tilt_series" / f"{ts_id}.star"
    tomograms = root / "relion5" / "tomograms.star"
    if star.is_file():
        alignment = read_alignment(
            star, ts_id=ts_id, tomograms_path=tomograms if tomograms.is_file() else None
        )
        if alignment.pixel_size_angstrom is None:
            raise FormatError(star, "gives no pixel size (no relion5/tomograms.star row)")
        excluded = frozenset(i for i, e in enumerate(alignment.excluded) if e)
        source = f"relion5/tilt_series/{ts_id}.star"
        return ExportAlignment(alignment, excluded, alignment.pixel_size_angstrom, source, notes)
    return None


def _read_sidecar(path: Path) -> tuple[float, tuple[int, int], frozenset[int]]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        pixel = float(meta["pixel_size_angstrom"])
        nx, ny = (int(v) for v in meta["image_size_xy"])
        excluded = frozenset(int(v) for v in meta.get("excluded_views", []))
    except (ValueError, KeyError, TypeError) as exc:
        raise FormatError(
            path, f"is not an alignment sidecar with pixel_size_angstrom and image_size_xy ({exc})"
        ) from None
    if not pixel > 0:
        raise FormatError(path, f"has a non-positive pixel_size_angstrom {pixel}")
    return pixel, (nx, ny), excluded


class AlignmentViewScore(Scored):
    """Alignment error of one view."""

    index: int = Field(description="0-based view index in the truth's stack.")
    tilt_angle_deg: float = Field(description="True tilt angle, degrees.")
    rms_px: float = Field(description="RMS reprojection error of the gold beads, truth pixels.")
    tilt_axis_error_deg: float = Field(
        description="In-plane rotation difference (estimate − truth), degrees."
    )
    tilt_angle_error_deg: float = Field(description="Tilt-angle error after removing the offset, degrees.")


class AlignmentScore(Scored):
    """Alignment error of one tilt series."""

    source: str = Field(description="The results file scored.")
    n_views_truth: int = Field(description="Views in the truth.")
    n_views_matched: int = Field(description="Views scored (in both, not excluded).")
    n_views_excluded: int = Field(description="Truth views the results exclude or lack.")
    n_gold: int = Field(description="Gold beads projected.")
    pixel_size_angstrom: float = Field(description="Truth pixel size, Å (the unit of the _px numbers).")
    rms_px: float = Field(description="RMS reprojection error over all views and beads, truth pixels.")
    rms_angstrom: float = Field(description="The same in Å.")
    max_view_rms_px: float = Field(description="Worst view's RMS reprojection error, truth pixels.")
    tilt_axis_angle_error_deg: float = Field(
        description="Mean in-plane rotation difference (estimate − truth), degrees, modulo 180°."
    )
    tilt_axis_flipped_180: bool = Field(description="Whether the estimate's axis points the other way.")
    tilt_angle_offset_deg: float = Field(
        description="Constant tilt-angle offset (estimate − truth), degrees."
    )
    tilt_angle_rms_error_deg: float = Field(description="RMS tilt-angle error after removing the offset.")
    tilt_angles_negated: bool = Field(description="Whether the estimate uses the opposite tilt-angle sign.")
    mirrored: bool = Field(description="Whether the estimate describes the mirror image of the specimen.")
    frame_matrix: list[list[float]] = Field(
        description="Linear part of T, the rigid map from the truth's specimen frame to the estimate's."
    )
    frame_rotation_deg: float = Field(description="Rotation angle of T (of T·diag(1,1,−1) when mirrored).")
    frame_translation_angstrom: list[float] = Field(description="Translation of T, (x, y, z) in Å.")
    views: list[AlignmentViewScore] = Field(description="Per scored view, in stack order.")
    notes: list[str] = Field(default_factory=list, description="Assumptions made while reading.")


def _match_views(truth: ExportAlignment, result: ExportAlignment) -> list[tuple[int, int]]:
    """Pairs (truth index, result index) of views present in both and excluded by neither."""
    n_true, n_res = truth.alignment.n_tilts, result.alignment.n_tilts
    if n_res == n_true:
        pairs = [(i, i) for i in range(n_true)]
    elif result.excluded and n_res == n_true - len(result.excluded):
        kept = [i for i in range(n_true) if i not in result.excluded]
        return [(i, j) for j, i in enumerate(kept) if i not in truth.excluded]
    else:
        true_angles = np.asarray(truth.alignment.tilt_angles_deg)
        pairs, used = [], set()
        for j, angle in enumerate(result.alignment.tilt_angles_deg):
            i = int(np.argmin(np.abs(true_angles - angle)))
            if abs(true_angles[i] - angle) <= 1.5 and i not in used:
                used.add(i)
                pairs.append((i, j))
    return [
        (i, j)
        for i, j in pairs
        if i not in truth.excluded and j not in result.excluded and result.alignment.transforms[j] is not None
    ]


def _matrices(data: ExportAlignment, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Projection matrices in Å and xf linear parts of the given views."""
    transforms = [data.alignment.transforms[i] for i in indices]
    a = torch.tensor(
        [[[t.a11, t.a12], [t.a21, t.a22]] for t in transforms if t is not None], dtype=torch.float64
    )
    d = torch.tensor(
        [[t.dx_angstrom, t.dy_angstrom] for t in transforms if t is not None], dtype=torch.float64
    )
    theta = torch.tensor([data.alignment.tilt_angles_deg[i] for i in indices], dtype=torch.float64)
    phi = torch.tensor([data.alignment.x_tilt_angles_deg[i] for i in indices], dtype=torch.float64)
    return projection_matrices_from_xf(a, d, theta, phi), a


def score_alignment(
    truth_dir: str | Path, results_dir: str | Path, ts_id: str
) -> AlignmentScore | NotProvided:
    """Score the alignment of one tilt series of an export-layout results folder against the truth.

    Parameters
    ----------
    truth_dir, results_dir
        Export-layout folders; the truth needs ``alignment/<ts>.xf`` (+ ``.tlt``, ``.json``) and ``gold/<ts>.csv``.
    ts_id
        Tilt-series id.

    Returns
    -------
    AlignmentScore or NotProvided
    """
    truth_root, results_root = Path(truth_dir), Path(results_dir)
    truth = read_export_alignment(truth_root, ts_id)
    gold_path = truth_root / "gold" / f"{ts_id}.csv"
    if truth is None:
        return NotProvided(reason=f"the truth has no alignment of {ts_id}")
    if not gold_path.is_file():
        return NotProvided(reason=f"the truth has no gold/{ts_id}.csv")
    result = read_export_alignment(
        results_root, ts_id, fallback_json=truth_root / "alignment" / f"{ts_id}.json"
    )
    if result is None:
        return NotProvided(
            reason=f"the results have no alignment/{ts_id}.xf or relion5/tilt_series/{ts_id}.star"
        )
    pairs = _match_views(truth, result)
    if not pairs:
        return NotProvided(reason=f"the alignment of {ts_id} shares no usable view with the truth")
    i_true, i_res = [i for i, _ in pairs], [j for _, j in pairs]
    gold = torch.from_numpy(read_gold_csv(gold_path))
    p_true, a_true = _matrices(truth, i_true)
    p_est, a_est = _matrices(result, i_res)
    fit = fit_rigid_specimen_transform(gold, p_est, p_true)
    pixel = truth.pixel_size_angstrom
    per_view = fit.residuals_xy.square().sum(-1).mean(-1).sqrt() / pixel
    overall = float(fit.residuals_xy.square().sum(-1).mean().sqrt()) / pixel
    axis_diff = wrap_deg(tilt_axis_angles_deg(a_est) - tilt_axis_angles_deg(a_true))
    axis_mean = circular_mean_deg(axis_diff)
    flipped = abs(axis_mean) > 90.0
    axis_diff = wrap_deg(axis_diff - (180.0 if flipped else 0.0))
    tilt = tilt_angle_errors(
        torch.tensor([truth.alignment.tilt_angles_deg[i] for i in i_true], dtype=torch.float64),
        torch.tensor([result.alignment.tilt_angles_deg[j] for j in i_res], dtype=torch.float64),
    )
    proper = (
        fit.matrix @ torch.diag(torch.tensor(_MIRROR_Z, dtype=torch.float64)) if fit.mirrored else fit.matrix
    )
    return AlignmentScore(
        source=result.source,
        n_views_truth=truth.alignment.n_tilts,
        n_views_matched=len(pairs),
        n_views_excluded=truth.alignment.n_tilts - len(truth.excluded) - len(pairs),
        n_gold=len(gold),
        pixel_size_angstrom=pixel,
        rms_px=overall,
        rms_angstrom=overall * pixel,
        max_view_rms_px=float(per_view.max()),
        tilt_axis_angle_error_deg=float(wrap_deg(torch.tensor(axis_mean - (180.0 if flipped else 0.0)))),
        tilt_axis_flipped_180=flipped,
        tilt_angle_offset_deg=tilt.offset_deg,
        tilt_angle_rms_error_deg=float(tilt.residuals_deg.square().mean().sqrt()),
        tilt_angles_negated=tilt.negated,
        mirrored=fit.mirrored,
        frame_matrix=fit.matrix.tolist(),
        frame_rotation_deg=float(rotation_angle_deg(proper)),
        frame_translation_angstrom=fit.translation_xyz.tolist(),
        views=[
            AlignmentViewScore(
                index=i,
                tilt_angle_deg=truth.alignment.tilt_angles_deg[i],
                rms_px=float(per_view[k]),
                tilt_axis_error_deg=float(axis_diff[k]),
                tilt_angle_error_deg=float(tilt.residuals_deg[k]),
            )
            for k, i in enumerate(i_true)
        ],
        notes=result.notes,
    )
