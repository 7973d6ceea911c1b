"""CTF estimation error per tilt: mean defocus, astigmatism and astigmatism angle (CONVENTIONS.md §8).

Tilts of the estimate are matched to the truth's by tilt angle (the ``.defocus`` files carry them), so an estimate
that skipped or excluded tilts is still compared tilt for tilt. The astigmatism angle is defined modulo 180° and
only meaningful when the astigmatism is: it is compared only where the true astigmatism reaches a threshold.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from pydantic import Field

from tomoforge.io import FormatError
from tomoforge.io.convert import TiltSeriesCtf, read_ctf
from tomoforge.io.imod import read_imod_defocus
from tomoforge.io.imod.defocus import FLAG_INVERTED_TILTS
from tomoforge.simulate.scoring._common import NotProvided, Scored, wrap_deg

__all__ = ["CtfErrors", "CtfScore", "CtfTiltScore", "ctf_errors", "match_tilt_angles", "score_ctf"]


class CtfErrors(NamedTuple):
    """Result of :func:`ctf_errors` (estimate − truth)."""

    defocus_angstrom: torch.Tensor
    """``(...)`` error of the mean defocus ``(u + v) / 2``, Å."""
    astigmatism_angstrom: torch.Tensor
    """``(...)`` error of the astigmatism ``|u − v|``, Å."""
    angle_deg: torch.Tensor
    """``(...)`` error of the angle of the larger defocus, modulo 180° in (−90°, 90°]; NaN where the true
    astigmatism is below the threshold."""


def _major_axis_angle_deg(u: torch.Tensor, v: torch.Tensor, angle_deg: torch.Tensor) -> torch.Tensor:
    """Angle of the direction of larger defocus (the u angle, or the perpendicular when v > u)."""
    return torch.where(u >= v, angle_deg, angle_deg + 90.0)


def ctf_errors(
    true_defocus_uv_angstrom: torch.Tensor,
    true_angle_deg: torch.Tensor,
    estimated_defocus_uv_angstrom: torch.Tensor,
    estimated_angle_deg: torch.Tensor,
    *,
    min_astigmatism_angstrom: float = 100.0,
) -> CtfErrors:
    """Defocus, astigmatism and astigmatism-angle errors of CTF estimates.

    Parameters
    ----------
    true_defocus_uv_angstrom, estimated_defocus_uv_angstrom
        ``(..., 2)`` defocus ``(u, v)`` in Å, positive for underfocus.
    true_angle_deg, estimated_angle_deg
        ``(...)`` astigmatism angle of ``u`` from image +x, counter-clockwise, degrees.
    min_astigmatism_angstrom
        True astigmatism ``|u − v|`` below which the angle error is NaN (not meaningful).

    Returns
    -------
    CtfErrors
    """
    tu, tv = true_defocus_uv_angstrom.unbind(-1)
    eu, ev = estimated_defocus_uv_angstrom.unbind(-1)
    defocus = 0.5 * (eu + ev) - 0.5 * (tu + tv)
    astig = (eu - ev).abs() - (tu - tv).abs()
    angle = wrap_deg(
        _major_axis_angle_deg(eu, ev, estimated_angle_deg) - _major_axis_angle_deg(tu, tv, true_angle_deg),
        180.0,
    )
    meaningful = (tu - tv).abs() >= min_astigmatism_angstrom
    angle = torch.where(meaningful, angle, torch.full_like(angle, float("nan")))
    return CtfErrors(defocus_angstrom=defocus, astigmatism_angstrom=astig, angle_deg=angle)


def match_tilt_angles(
    true_angles_deg: np.ndarray, estimated_angles_deg: np.ndarray, *, tolerance_deg: float
) -> list[tuple[int, int]]:
    """Pair views by nearest tilt angle, closest pairs first, each view used once.

    Returns
    -------
    list of (truth index, estimate index)
        Pairs closer than ``tolerance_deg``, in truth order.
    """
    diff = np.abs(np.asarray(true_angles_deg)[:, None] - np.asarray(estimated_angles_deg)[None, :])
    order = np.argsort(diff, axis=None, kind="stable")
    used_t, used_e, pairs = set(), set(), []
    for flat in order:
        i, j = divmod(int(flat), diff.shape[1])
        if diff[i, j] > tolerance_deg:
            break
        if i not in used_t and j not in used_e:
            used_t.add(i)
            used_e.add(j)
            pairs.append((i, j))
    return sorted(pairs)


class CtfTiltScore(Scored):
    """CTF error of one tilt."""

    tilt_angle_deg: float = Field(description="True tilt angle, degrees.")
    true_defocus_angstrom: float = Field(description="True mean defocus, Å.")
    defocus_error_angstrom: float = Field(description="Estimated − true mean defocus, Å.")
    astigmatism_error_angstrom: float = Field(description="Estimated − true |u − v|, Å.")
    angle_error_deg: float | None = Field(
        description="Astigmatism-angle error (mod 180°); None if not meaningful."
    )


class CtfScore(Scored):
    """CTF error of one tilt series."""

    source: str = Field(description="The results file scored.")
    n_tilts_truth: int = Field(description="Tilts with a true CTF.")
    n_tilts_matched: int = Field(description="Tilts matched by tilt angle.")
    mean_defocus_error_angstrom: float = Field(description="Mean signed defocus error, Å.")
    rms_defocus_error_angstrom: float = Field(description="RMS defocus error, Å.")
    max_abs_defocus_error_angstrom: float = Field(description="Largest |defocus error|, Å.")
    rms_astigmatism_error_angstrom: float = Field(description="RMS astigmatism error, Å.")
    rms_angle_error_deg: float | None = Field(
        description="RMS astigmatism-angle error over tilts with meaningful astigmatism; None if none."
    )
    tilts: list[CtfTiltScore] = Field(description="Per matched tilt, in truth order.")


def _usable(path: Path, ts_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tilt angles, ``(u, v)`` and astigmatism angles of the usable estimates of a CTF file.

    A ``.defocus`` file is read line by line (each line carries its tilt angle, so lines left out for excluded
    views do not matter); a RELION table through :func:`tomoforge.io.convert.read_ctf`.
    """
    rows: list[tuple[float, float, float, float]] = []
    if path.suffix == ".defocus":
        defocus = read_imod_defocus(path)
        sign = -1.0 if defocus.flags & FLAG_INVERTED_TILTS else 1.0
        for entry in defocus.entries:
            p = entry.ctf
            angle = sign * 0.5 * (entry.start_tilt_deg + entry.end_tilt_deg)
            rows.append((angle, p.defocus_u_angstrom, p.defocus_v_angstrom, p.astigmatism_angle_deg))
    else:
        data: TiltSeriesCtf = read_ctf(path, ts_id=ts_id)
        for index, angle in enumerate(data.tilt_angles_deg or ()):
            q = data.ctf.parameters_for(index)
            if q is not None:
                rows.append((angle, q.defocus_u_angstrom, q.defocus_v_angstrom, q.astigmatism_angle_deg))
    table = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    return table[:, 0], table[:, 1:3], table[:, 3]


def _ctf_file(root: Path, ts_id: str) -> tuple[Path, str] | None:
    for relative in (f"ctf/{ts_id}.defocus", f"relion5/tilt_series/{ts_id}.star"):
        if (root / relative).is_file():
            return root / relative, relative
    return None


def score_ctf(
    truth_dir: str | Path,
    results_dir: str | Path,
    ts_id: str,
    *,
    tilt_tolerance_deg: float = 1.0,
    min_astigmatism_angstrom: float = 100.0,
) -> CtfScore | NotProvided:
    """Score the CTF estimates of one tilt series (``ctf/<ts>.defocus``, else the RELION tilt-series table).

    Parameters
    ----------
    truth_dir, results_dir
        Export-layout folders.
    ts_id
        Tilt-series id.
    tilt_tolerance_deg
        Largest tilt-angle difference of a matched pair.
    min_astigmatism_angstrom
        True astigmatism below which the angle is not compared.

    Returns
    -------
    CtfScore or NotProvided
    """
    truth_file = _ctf_file(Path(truth_dir), ts_id)
    if truth_file is None:
        return NotProvided(reason=f"the truth has no ctf/{ts_id}.defocus")
    results_file = _ctf_file(Path(results_dir), ts_id)
    if results_file is None:
        return NotProvided(
            reason=f"the results have no ctf/{ts_id}.defocus or relion5/tilt_series/{ts_id}.star"
        )
    t_angles, t_uv, t_ang = _usable(truth_file[0], ts_id)
    if len(t_angles) == 0:
        raise FormatError(truth_file[0], "holds no usable CTF with tilt angles")
    try:
        e_angles, e_uv, e_ang = _usable(results_file[0], ts_id)
    except FormatError as exc:
        if results_file[0].suffix == ".star" and "no CTF columns" in exc.problem:
            return NotProvided(
                reason=f"the results have no ctf/{ts_id}.defocus and {results_file[1]} has no CTF"
            )
        raise
    pairs = match_tilt_angles(t_angles, e_angles, tolerance_deg=tilt_tolerance_deg)
    if not pairs:
        return NotProvided(reason=f"{results_file[1]} matches no tilt angle of the truth")
    it = [i for i, _ in pairs]
    ie = [j for _, j in pairs]
    err = ctf_errors(
        torch.from_numpy(t_uv[it]),
        torch.from_numpy(t_ang[it]),
        torch.from_numpy(e_uv[ie]),
        torch.from_numpy(e_ang[ie]),
        min_astigmatism_angstrom=min_astigmatism_angstrom,
    )
    angle_ok = ~torch.isnan(err.angle_deg)
    return CtfScore(
        source=results_file[1],
        n_tilts_truth=len(t_angles),
        n_tilts_matched=len(pairs),
        mean_defocus_error_angstrom=float(err.defocus_angstrom.mean()),
        rms_defocus_error_angstrom=float(err.defocus_angstrom.square().mean().sqrt()),
        max_abs_defocus_error_angstrom=float(err.defocus_angstrom.abs().max()),
        rms_astigmatism_error_angstrom=float(err.astigmatism_angstrom.square().mean().sqrt()),
        rms_angle_error_deg=float(err.angle_deg[angle_ok].square().mean().sqrt()) if angle_ok.any() else None,
        tilts=[
            CtfTiltScore(
                tilt_angle_deg=float(t_angles[i]),
                true_defocus_angstrom=float(t_uv[i].mean()),
                defocus_error_angstrom=float(err.defocus_angstrom[k]),
                astigmatism_error_angstrom=float(err.astigmatism_angstrom[k]),
                angle_error_deg=float(err.angle_deg[k]) if bool(angle_ok[k]) else None,
            )
            for k, i in enumerate(it)
        ],
    )
